"""ServeService: loads SavedModels from the store and answers predictions."""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from typing import Iterator

import grpc
import numpy as np
import tensorflow as tf

from cookline import tensors
from cookline.v1 import model_pb2, serve_pb2, serve_pb2_grpc
from services.common import layout
from services.common.errors import Fail, invalid, rpc, status_of
from services.common.store import ObjectStore

log = logging.getLogger("cookline.serve")

# Rows one Predict may carry.
MAX_ROWS = 1 << 20


@dataclass
class LoadedModel:
    """One model version ready to answer."""
    name: str
    version: int
    predict: object  # the SavedModel's serving_default concrete function
    class_names: list[str]
    feature_columns: list[str]
    num_features: int

    def metadata(self) -> serve_pb2.ModelMetadata:
        return serve_pb2.ModelMetadata(
            model=model_pb2.ModelRef(name=self.name, version=self.version),
            inputs={"features": serve_pb2.TensorSpec(dtype=tensors.DataType.DATA_TYPE_FLOAT32,
                                                     shape=[-1, self.num_features])},
            class_names=self.class_names, feature_columns=self.feature_columns)


class ServeServicer(serve_pb2_grpc.ServeServiceServicer):
    def __init__(self, store: ObjectStore, cache_dir: str | None = None):
        self.store = store
        self.cache_dir = cache_dir or tempfile.mkdtemp(prefix="cookline-serve-")
        self.models: dict[str, LoadedModel] = {}  # name -> the version answering for "newest"
        self.versions: dict[tuple[str, int], LoadedModel] = {}
        self.lock = threading.Lock()

    # --- loading -------------------------------------------------------------

    def _load(self, ref: model_pb2.ModelRef, reload_newest: bool) -> LoadedModel:
        """The loaded model for ref, loading it from the store when needed."""
        layout.check_name("model.name", ref.name)
        with self.lock:
            if ref.version and (ref.name, ref.version) in self.versions:
                return self.versions[(ref.name, ref.version)]
            if not ref.version and not reload_newest and ref.name in self.models:
                return self.models[ref.name]
            meta = layout.read_model_metadata(self.store, ref.name, ref.version)
            version = int(meta["version"])
            if (ref.name, version) not in self.versions:
                self.versions[(ref.name, version)] = self._load_from_store(meta)
            loaded = self.versions[(ref.name, version)]
            if not ref.version or version >= self.models.get(ref.name, loaded).version:
                self.models[ref.name] = loaded
            return loaded

    def _load_from_store(self, meta: dict) -> LoadedModel:
        name, version = meta["name"], int(meta["version"])
        prefix = layout.model_prefix(name, version)
        local = os.path.join(self.cache_dir, name, str(version))
        for key in self.store.list(prefix):
            self.store.get_file(key, os.path.join(local, key[len(prefix):]))
        predict = tf.saved_model.load(local).signatures["serving_default"]
        num_features = int(meta["inputs"]["features"]["shape"][1])
        predict(features=tf.zeros([1, num_features], tf.float32))  # warm-up: trace before the first request
        log.info("model %s version %d loaded", name, version)
        return LoadedModel(name, version, predict, list(meta["class_names"]),
                           list(meta.get("feature_columns", [])), num_features)

    # --- prediction ----------------------------------------------------------

    def _predict(self, request: serve_pb2.PredictRequest) -> serve_pb2.PredictResponse:
        model = self._load(request.model, reload_newest=False)
        unknown = sorted(set(request.inputs) - {"features"})
        if unknown:
            raise invalid(f"inputs[{unknown[0]!r}]: unknown input (model {model.name!r} takes 'features')")
        if "features" not in request.inputs:
            raise invalid(f"inputs['features']: required (float32 [rows, {model.num_features}])")
        tensor = request.inputs["features"]
        if tensor.dtype != tensors.DataType.DATA_TYPE_FLOAT32:
            raise invalid(f"inputs['features']: dtype {tensors.dtype_name(tensor.dtype)}, expected float32")
        try:
            features = tensors.to_numpy(tensor)
        except tensors.TensorError as exc:
            raise invalid(f"inputs['features']: {exc}") from None
        if features.ndim != 2:
            raise invalid(f"inputs['features']: shape {list(features.shape)}, expected [rows, {model.num_features}]")
        if features.shape[1] != model.num_features:
            raise invalid(f"inputs['features']: {features.shape[1]} features per row, "
                          f"model {model.name!r} expects {model.num_features}")
        if not 1 <= features.shape[0] <= MAX_ROWS:
            raise invalid(f"inputs['features']: {features.shape[0]} rows, expected 1 to {MAX_ROWS}")
        scores = model.predict(features=tf.constant(features))["scores"].numpy()
        labels = np.asarray(model.class_names, dtype=object)[scores.argmax(axis=1)]
        response = serve_pb2.PredictResponse(model=model_pb2.ModelRef(name=model.name, version=model.version),
                                             class_names=model.class_names)
        tensors.from_numpy(scores.astype(np.float32, copy=False), out=response.outputs["scores"])
        tensors.from_numpy(labels, out=response.outputs["label"])
        return response

    @rpc
    def LoadModel(self, request, context) -> serve_pb2.LoadModelResponse:
        return serve_pb2.LoadModelResponse(metadata=self._load(request.model, reload_newest=True).metadata())

    @rpc
    def GetModelMetadata(self, request, context) -> serve_pb2.GetModelMetadataResponse:
        return serve_pb2.GetModelMetadataResponse(metadata=self._load(request.model, reload_newest=False).metadata())

    @rpc
    def Predict(self, request, context) -> serve_pb2.PredictResponse:
        return self._predict(request)

    @rpc
    def PredictStream(self, request_iterator, context) -> Iterator[serve_pb2.PredictStreamResponse]:
        for message in request_iterator:
            try:
                yield serve_pb2.PredictStreamResponse(correlation_id=message.correlation_id,
                                                      result=self._predict(message.request))
            except Exception as exc:  # noqa: BLE001 - one bad message does not end the stream
                code, text = status_of(exc)
                yield serve_pb2.PredictStreamResponse(correlation_id=message.correlation_id,
                                                      error=serve_pb2.PredictError(code=code.value[0], message=text))

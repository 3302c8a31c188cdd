"""TrainService: trains on batches streamed through process from collect, every epoch,
streams progress, and publishes models/<name>/<version>/ (SavedModel + cookline.json)."""
from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading
import time
from typing import Iterator

import grpc
import keras
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from cookline import channels, tensors
from cookline.v1 import (collect_pb2, collect_pb2_grpc, data_pb2, model_pb2, process_pb2,
                         process_pb2_grpc, train_pb2, train_pb2_grpc)
from services.common import layout
from services.common.errors import Fail, invalid, rpc
from services.common.store import ObjectStore
from services.process import ops as ops_lib
from services.train import models, spec as train_spec

log = logging.getLogger("cookline.train")

# Validation rows per batch: no gradient, so larger batches are cheaper.
EVAL_BATCH = 1024
_DONE = object()


class _Cancelled(Exception):
    """The Train call was cancelled by its caller."""


class _Progress(keras.callbacks.Callback):
    """Forwards per-epoch metrics to the RPC's response stream."""

    def __init__(self, events: queue.Queue, epochs: int, train_rows: int):
        super().__init__()
        self.events, self.epochs, self.train_rows = events, epochs, train_rows
        self.started = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        elapsed = now - self.epoch_started
        done = epoch + 1
        self.events.put(train_pb2.TrainResponse(progress=train_pb2.TrainProgress(
            epoch=done, epochs=self.epochs,
            metrics={k: float(v) for k, v in (logs or {}).items()},
            samples_per_second=self.train_rows / elapsed if elapsed > 0 else 0.0,
            eta_seconds=(now - self.started) / done * (self.epochs - done),
        )))


class TrainServicer(train_pb2_grpc.TrainServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store
        self.collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect"))
        process_channel = channels.channel("process")
        self.process = process_pb2_grpc.ProcessServiceStub(process_channel)
        # Process with the responses left as bytes: batches are decoded as views (tensors.decode_batch).
        self.process_raw = process_channel.unary_stream(
            "/cookline.v1.ProcessService/Process", request_serializer=process_pb2.ProcessRequest.SerializeToString,
            response_deserializer=None)

    @rpc
    def Train(self, request: train_pb2.TrainRequest, context) -> Iterator[train_pb2.TrainResponse]:
        pipeline = request.pipeline
        name = layout.check_name("pipeline.name", pipeline.name)
        spec = train_spec.resolve(pipeline.train)
        info = self.collect.GetDataset(collect_pb2.GetDatasetRequest(dataset=request.dataset),
                                       timeout=30).dataset
        fields = {f.name: f for f in info.fields}
        if "label" not in fields:
            raise invalid(f"dataset {info.ref.name!r}: a classifier needs a 'label' tensor")
        class_names = list(fields["label"].class_names)
        if len(class_names) < 2:
            raise invalid(f"dataset {info.ref.name!r}: a classifier needs at least 2 classes, found {len(class_names)}")
        dataset = info.ref  # pinned version: every epoch reads the same data

        fit = self.process.Fit(process_pb2.FitRequest(dataset=dataset, split=pipeline.split, ops=pipeline.process))
        fitted_ops = list(fit.ops)
        # What the batches look like after the ops: the mlp takes "features" ([d]) or "image" (flattened).
        schema = {f.name: (tensors.dtype_name(f.dtype), list(f.shape)) for f in info.fields}
        processed = ops_lib.output_fields(schema, fitted_ops)
        input_name = next((n for n in ("features", "image") if n in processed), None)
        if input_name is None:
            raise invalid(f"train.model: {spec.model!r} needs 'features' or 'image' after the process ops; the data has "
                          f"{', '.join(sorted(processed))} (text needs a vectorize_text op)")
        input_dtype, input_shape = processed[input_name]
        input_dtype = "uint8" if input_dtype == "uint8" else "float32"
        log.info("run %s: training %s on %s@%s (%d training rows, input %s %s %s)", request.run_id, spec.model,
                 dataset.name, dataset.version, fit.rows, input_name, input_dtype, input_shape)

        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        model = models.build(spec, input_shape, len(class_names), input_dtype)
        source = (input_name, input_dtype, input_shape)
        train_data = self._dataset(dataset, pipeline.split, data_pb2.SUBSET_TRAIN, fitted_ops,
                                   spec.batch_size, source, cancelled)
        val_data = None
        has_validation = (info.statistics.split_counts.get("validation", 0) > 0 if info.predefined_split
                          else pipeline.split.validation > 0)
        if has_validation:
            val_data = self._dataset(dataset, pipeline.split, data_pb2.SUBSET_VALIDATION, fitted_ops,
                                     EVAL_BATCH, source, cancelled)

        # fit() runs on its own thread; this one streams its progress to the caller.
        events: queue.Queue = queue.Queue()
        outcome: dict = {}

        def run_fit():
            try:
                outcome["history"] = model.fit(
                    train_data, validation_data=val_data, epochs=int(spec.epochs), verbose=0,
                    callbacks=[_Progress(events, int(spec.epochs), fit.rows)])
            except BaseException as exc:  # noqa: BLE001 - reported on the RPC
                outcome["error"] = exc
            finally:
                events.put(_DONE)

        worker = threading.Thread(target=run_fit, name=f"fit-{request.run_id}", daemon=True)
        worker.start()
        last_metrics: dict[str, float] = {}
        while (event := events.get()) is not _DONE:
            last_metrics = dict(event.progress.metrics)
            yield event
        worker.join()
        if cancelled.is_set():
            raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
        if "error" in outcome:
            raise outcome["error"]
        if any(not np.isfinite(v) for v in last_metrics.values()):
            raise invalid(f"train: training diverged (metrics {last_metrics}); lower train.learning_rate")

        version = self._publish(name, model, fitted_ops, schema, class_names, last_metrics, dataset, request)
        yield train_pb2.TrainResponse(result=train_pb2.TrainResult(
            model=model_pb2.ModelRef(name=name, version=version), metrics=last_metrics))

    def _dataset(self, dataset, split, subset, fitted_ops, batch_size, source, cancelled) -> tf.data.Dataset:
        """A tf.data pipeline that pulls a fresh Process stream each time it is iterated (each epoch)."""
        epoch = {"n": 0}
        name, dtype, shape = source

        def batches():
            call = self.process_raw(process_pb2.ProcessRequest(
                dataset=dataset, split=split, subset=subset, ops=fitted_ops,
                batch_size=batch_size, epoch=epoch["n"]))
            epoch["n"] += 1
            try:
                for response in call:
                    if cancelled.is_set():
                        raise _Cancelled()
                    arrays, _ = tensors.decode_batch(response)
                    yield arrays[name].astype(dtype, copy=False), arrays["label"]
            finally:
                call.cancel()

        signature = (tf.TensorSpec([None, *shape], dtype), tf.TensorSpec([None], tf.int32))
        return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)

    def _feature_columns(self, dataset, raw_name, raw_shape, fitted_ops, served) -> list[str]:
        """Names of the served "features" positions: the CSV columns, pixel_<i>, or the op's outputs."""
        if len(served) < len(fitted_ops):
            op = fitted_ops[len(fitted_ops) - len(served) - 1]
            if op.WhichOneof("kind") == "vectorize_text":
                return ["[UNK]"] + [v.decode() for v in op.fitted["vocabulary"].string_values]
            return [f"feature_{i}" for i in range(int(np.prod(raw_shape)))]
        if raw_name == "image":
            return [f"pixel_{i}" for i in range(int(np.prod(raw_shape)))]
        info = self.collect.GetDataset(collect_pb2.GetDatasetRequest(dataset=dataset), timeout=30).dataset
        return list(next(f for f in info.fields if f.name == "features").columns)

    def _publish(self, name, model, fitted_ops, schema, class_names, metrics, dataset, request) -> int:
        """Exports the model and publishes it as the next version (cookline.json last)."""
        existing = layout.model_versions(self.store, name, published_only=False)
        version = (existing[-1] if existing else 0) + 1
        prefix = layout.model_prefix(name, version)
        # Serving takes the raw dataset tensor, or the output of the last op the model cannot reproduce.
        served = models.served_ops(fitted_ops)
        before = ops_lib.output_fields(schema, fitted_ops[:len(fitted_ops) - len(served)])
        raw_name = "features" if "features" in before else "image"
        raw_shape = before[raw_name][1]
        feature_columns = self._feature_columns(dataset, raw_name, raw_shape, fitted_ops, served)
        with tempfile.TemporaryDirectory(prefix="cookline-export-") as tmp:
            num_features = models.export(model, fitted_ops, raw_shape, tmp)
            files = {}
            for root, _dirs, names in os.walk(tmp):
                for file_name in names:
                    path = os.path.join(root, file_name)
                    files[os.path.relpath(path, tmp).replace(os.sep, "/")] = path
            metadata = {
                "name": name,
                "version": version,
                "class_names": class_names,
                "feature_columns": feature_columns,
                "inputs": {"features": {"dtype": "float32", "shape": [-1, num_features]}},
                "outputs": {"scores": {"dtype": "float32", "shape": [-1, len(class_names)]}},
                "metrics": metrics,
                # The fitted ops (means, vocabularies, lookups), so serving can rebuild exactly what training
                # did; "served_from_op" says where the served "features" input enters the op list.
                "process": [json_format.MessageToDict(op, preserving_proto_field_name=True) for op in fitted_ops],
                "served_from_op": len(fitted_ops) - len(served),
                "dataset": {"name": dataset.name, "version": dataset.version},
                "run_id": request.run_id,
                "pipeline": json_format.MessageToDict(request.pipeline, preserving_proto_field_name=True),
                "framework": {"tensorflow": tf.__version__, "keras": keras.__version__},
                "created_at": layout.now(),
            }
            self.store.publish(prefix, files, layout.MODEL_METADATA, json.dumps(metadata, indent=1).encode())
        log.info("model %s version %d published", name, version)
        return version

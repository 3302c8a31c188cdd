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
from services.common import splits
from services.train import models, spec as train_spec
from services.train.feed import EpochFeed

log = logging.getLogger("cookline.train")

# Validation rows per batch: no gradient, so larger batches are cheaper.
EVAL_BATCH = 1024
_DONE = object()


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
        self.process = process_pb2_grpc.ProcessServiceStub(channels.channel("process"))

    @rpc
    def Train(self, request: train_pb2.TrainRequest, context) -> Iterator[train_pb2.TrainResponse]:
        pipeline = request.pipeline
        name = layout.check_name("pipeline.name", pipeline.name)
        spec = train_spec.resolve(pipeline.train)
        info = self.collect.GetDataset(collect_pb2.GetDatasetRequest(dataset=request.dataset),
                                       timeout=30).dataset
        fields = {f.name: f for f in info.fields}
        if "features" not in fields or len(fields["features"].shape) != 1:
            raise invalid(f"train.model: {spec.model!r} needs tabular features; dataset {info.ref.name!r} has none")
        num_features = int(fields["features"].shape[0])
        class_names = list(fields["label"].class_names)
        if len(class_names) < 2:
            raise invalid(f"dataset {info.ref.name!r}: a classifier needs at least 2 classes, found {len(class_names)}")
        dataset = info.ref  # pinned version: every epoch reads the same data

        train_rows = splits.sizes(info.num_rows, pipeline.split)[data_pb2.SUBSET_TRAIN]
        fit = self.process.Fit(process_pb2.FitRequest(dataset=dataset, split=pipeline.split, ops=pipeline.process))
        fitted_ops = list(fit.ops)
        log.info("run %s: training %s on %s@%s (%d training rows)", request.run_id, spec.model,
                 dataset.name, dataset.version, train_rows)

        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        train_data = self._feed(dataset, pipeline.split, data_pb2.SUBSET_TRAIN, fitted_ops,
                                   spec.batch_size, num_features, cancelled)
        val_data = None
        if pipeline.split.validation > 0:
            val_data = self._feed(dataset, pipeline.split, data_pb2.SUBSET_VALIDATION, fitted_ops,
                                     EVAL_BATCH, num_features, cancelled)

        model = models.build(spec, num_features, len(class_names))  # while the first batches stream in

        # fit() runs on its own thread; this one streams its progress to the caller.
        events: queue.Queue = queue.Queue()
        outcome: dict = {}

        def run_fit():
            try:
                outcome["history"] = model.fit(
                    train_data, validation_data=val_data, epochs=int(spec.epochs), verbose=0,
                    callbacks=[_Progress(events, int(spec.epochs), train_rows)])
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

        version = self._publish(name, model, fitted_ops, num_features, class_names, fields["features"],
                                last_metrics, dataset, request)
        yield train_pb2.TrainResponse(result=train_pb2.TrainResult(
            model=model_pb2.ModelRef(name=name, version=version), metrics=last_metrics))

    def _feed(self, dataset, split, subset, fitted_ops, batch_size, num_features, cancelled) -> tf.data.Dataset:
        request = process_pb2.ProcessRequest(dataset=dataset, split=split, subset=subset, ops=fitted_ops)
        return EpochFeed(self.process, request, batch_size, num_features, cancelled).start().dataset()

    def _publish(self, name, model, fitted_ops, num_features, class_names, feature_field, metrics, dataset,
                 request) -> int:
        """Exports the model and publishes it as the next version (cookline.json last)."""
        existing = layout.model_versions(self.store, name, published_only=False)
        version = (existing[-1] if existing else 0) + 1
        prefix = layout.model_prefix(name, version)
        with tempfile.TemporaryDirectory(prefix="cookline-export-") as tmp:
            models.export(model, fitted_ops, num_features, tmp)
            files = {}
            for root, _dirs, names in os.walk(tmp):
                for file_name in names:
                    path = os.path.join(root, file_name)
                    files[os.path.relpath(path, tmp).replace(os.sep, "/")] = path
            metadata = {
                "name": name,
                "version": version,
                "class_names": class_names,
                "feature_columns": list(feature_field.columns),
                "inputs": {"features": {"dtype": "float32", "shape": [-1, num_features]}},
                "outputs": {"scores": {"dtype": "float32", "shape": [-1, len(class_names)]}},
                "metrics": metrics,
                "dataset": {"name": dataset.name, "version": dataset.version},
                "run_id": request.run_id,
                "pipeline": json_format.MessageToDict(request.pipeline, preserving_proto_field_name=True),
                "framework": {"tensorflow": tf.__version__, "keras": keras.__version__},
                "created_at": layout.now(),
            }
            self.store.publish(prefix, files, layout.MODEL_METADATA, json.dumps(metadata, indent=1).encode())
        log.info("model %s version %d published", name, version)
        return version

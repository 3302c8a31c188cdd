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
from services.common import layout, splits
from services.common.errors import Fail, invalid, rpc
from services.common.store import ObjectStore
from services.train import models, spec as train_spec, tfjs
from services.train.checkpoints import Checkpoints
from services.train.evaluate import evaluate_model
from services.train.feed import EpochFeed

log = logging.getLogger("cookline.train")

# Validation rows per batch: no gradient, so larger batches are cheaper.
EVAL_BATCH = 1024
_DONE = object()


class _Progress(keras.callbacks.Callback):
    """Runs on the fit thread: streams progress, checkpoints each epoch, stops on cancel or NaN."""

    def __init__(self, events: queue.Queue, spec, train_rows: int, cancelled: threading.Event,
                 checkpoints: Checkpoints | None, first_epoch: int):
        super().__init__()
        self.events, self.spec, self.train_rows = events, spec, train_rows
        self.cancelled, self.checkpoints, self.first_epoch = cancelled, checkpoints, first_epoch
        self.started = time.monotonic()
        self.diverged: str | None = None

    def _send(self, epoch: int, batch: int, logs, finished: bool) -> None:
        now = time.monotonic()
        epochs = int(self.spec.epochs)
        rows = self.train_rows if finished else batch * self.spec.batch_size
        elapsed = now - self.epoch_started
        done = (epoch - 1 - self.first_epoch) + (1.0 if finished else min(rows / max(self.train_rows, 1), 1.0))
        progress = train_pb2.TrainProgress(
            epoch=epoch, epochs=epochs, batch=batch, epoch_finished=finished,
            metrics={k: float(v) for k, v in (logs or {}).items()},
            samples_per_second=rows / elapsed if elapsed > 0 else 0.0,
            eta_seconds=(now - self.started) / done * (epochs - self.first_epoch - done) if done > 0 else 0.0)
        if self.first_epoch and not getattr(self, "announced", False):
            progress.resumed_from_epoch, self.announced = self.first_epoch, True
        self.events.put(train_pb2.TrainResponse(progress=progress))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_started = epoch + 1, time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self.cancelled.is_set():
            self.model.stop_training = True  # keras checks this after every batch
            return
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            self.diverged = f"loss became {loss} in epoch {self.epoch}, batch {batch + 1}"
            self.model.stop_training = True
            return
        if (batch + 1) % self.spec.progress_every_batches == 0:
            self._send(self.epoch, batch + 1, logs, finished=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.cancelled.is_set() or self.diverged:
            return
        if self.checkpoints:
            self.checkpoints.save(self.model, epoch + 1, logs)
        self._send(epoch + 1, 0, logs, finished=True)


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
        train_spec.check_export(pipeline)
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
        split = pipeline.split

        train_rows = splits.sizes(info.num_rows, split)[data_pb2.SUBSET_TRAIN]
        fitted_ops = list(self.process.Fit(process_pb2.FitRequest(dataset=dataset, split=split,
                                                                  ops=pipeline.process)).ops)
        checkpoints = Checkpoints(self.store, request.run_id) if request.run_id else None
        resumed = checkpoints.latest() if checkpoints else None
        first_epoch, last_metrics = (resumed[0], resumed[2]) if resumed else (0, {})
        log.info("run %s: training %s on %s@%s (%d training rows)%s", request.run_id, spec.model, dataset.name,
                 dataset.version, train_rows, f", resuming after epoch {first_epoch}" if resumed else "")

        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        train_data = self._feed(dataset, split, data_pb2.SUBSET_TRAIN, fitted_ops, spec.batch_size,
                                num_features, cancelled, first_epoch)
        val_data = None
        if split.validation > 0:
            val_data = self._feed(dataset, split, data_pb2.SUBSET_VALIDATION, fitted_ops, EVAL_BATCH,
                                  num_features, cancelled, first_epoch)
        # built (or restored) while the first batches stream in
        model = resumed[1] if resumed else models.build(spec, num_features, len(class_names))

        # fit() runs on its own thread; this one streams its progress to the caller.
        events: queue.Queue = queue.Queue()
        outcome: dict = {}
        progress = _Progress(events, spec, train_rows, cancelled, checkpoints, first_epoch)

        def run_fit():
            try:
                model.fit(train_data, validation_data=val_data, epochs=int(spec.epochs), initial_epoch=first_epoch,
                          verbose=0, callbacks=[progress])
            except BaseException as exc:  # noqa: BLE001 - reported on the RPC
                outcome["error"] = exc
            finally:
                events.put(_DONE)

        worker = threading.Thread(target=run_fit, name=f"fit-{request.run_id}", daemon=True)
        worker.start()
        try:
            while (event := events.get()) is not _DONE:
                if event.progress.epoch_finished:
                    last_metrics = dict(event.progress.metrics)
                yield event
            worker.join()
        finally:
            if checkpoints:
                checkpoints.close()
        if cancelled.is_set():
            raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
        if progress.diverged:
            raise invalid(f"train: training diverged: {progress.diverged}; lower train.learning_rate")
        if "error" in outcome:
            raise outcome["error"]

        evaluation = self._evaluate(model, dataset, split, fitted_ops, num_features, class_names, cancelled)
        version = self._publish(name, model, fitted_ops, num_features, class_names, fields["features"],
                                last_metrics, evaluation, dataset, request)
        if checkpoints:
            checkpoints.discard()
        yield train_pb2.TrainResponse(result=train_pb2.TrainResult(
            model=model_pb2.ModelRef(name=name, version=version), metrics=last_metrics, evaluation=evaluation))

    def _evaluate(self, model, dataset, split, fitted_ops, num_features, class_names, cancelled):
        """Evaluation on the test split, else the validation split; None when nothing is held out."""
        subset = (data_pb2.SUBSET_TEST if split.test > 0 else
                  data_pb2.SUBSET_VALIDATION if split.validation > 0 else None)
        if subset is None:
            return None
        request = process_pb2.ProcessRequest(dataset=dataset, split=split, subset=subset, ops=fitted_ops)
        feed = EpochFeed(self.process, request, EVAL_BATCH, num_features, cancelled, budget_bytes=0)
        return evaluate_model(model, feed.batches(), class_names, subset)

    def _feed(self, dataset, split, subset, fitted_ops, batch_size, num_features, cancelled,
              first_epoch) -> tf.data.Dataset:
        request = process_pb2.ProcessRequest(dataset=dataset, split=split, subset=subset, ops=fitted_ops)
        return EpochFeed(self.process, request, batch_size, num_features, cancelled,
                         first_epoch=first_epoch).start().dataset()

    def _publish(self, name, model, fitted_ops, num_features, class_names, feature_field, metrics, evaluation,
                 dataset, request) -> int:
        """Exports the model and publishes it as the next version (cookline.json last)."""
        existing = layout.model_versions(self.store, name, published_only=False)
        version = (existing[-1] if existing else 0) + 1
        prefix = layout.model_prefix(name, version)
        with tempfile.TemporaryDirectory(prefix="cookline-export-") as tmp:
            models.export(model, fitted_ops, num_features, tmp)
            if request.pipeline.export.tfjs:
                tfjs.write(model, fitted_ops, num_features, name, os.path.join(tmp, "tfjs"))
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
                "evaluation": (json_format.MessageToDict(evaluation, preserving_proto_field_name=True)
                               if evaluation else None),
                "dataset": {"name": dataset.name, "version": dataset.version},
                "run_id": request.run_id,
                "pipeline": json_format.MessageToDict(request.pipeline, preserving_proto_field_name=True),
                "formats": ["saved_model"] + (["tfjs"] if request.pipeline.export.tfjs else []),
                "framework": {"tensorflow": tf.__version__, "keras": keras.__version__},
                "created_at": layout.now(),
            }
            self.store.publish(prefix, files, layout.MODEL_METADATA, json.dumps(metadata, indent=1).encode())
        log.info("model %s version %d published", name, version)
        return version

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
from collections.abc import Iterator

import grpc
import keras
import numpy as np
import tensorflow as tf
from google.protobuf import json_format

from cookline import channels, tensors
from cookline.spec import ops as spec_ops
from cookline.spec import train as train_spec
from cookline.v1 import (
    collect_pb2,
    collect_pb2_grpc,
    data_pb2,
    model_pb2,
    pipeline_pb2,
    process_pb2,
    process_pb2_grpc,
    train_pb2,
    train_pb2_grpc,
)
from services.common import layout, splits
from services.common.errors import Fail, invalid, rpc
from services.common.store import ObjectStore
from services.process import ops as ops_lib
from services.train import distributed, models, tfjs, warm
from services.train import feed as feed_module
from services.train.checkpoints import Checkpoints
from services.train.evaluate import evaluate_model
from services.train.feed import EpochFeed

log = logging.getLogger("cookline.train")

# Validation rows per batch: no gradient, so larger batches are cheaper.
EVAL_BATCH = 1024
_DONE = object()


class _Progress(keras.callbacks.Callback):
    """Runs on the fit thread: streams progress, checkpoints each epoch, stops on cancel or NaN."""

    def __init__(
        self,
        events: queue.Queue,
        spec,
        train_rows: int,
        cancelled: threading.Event,
        checkpoints: Checkpoints | None,
        first_epoch: int,
    ):
        super().__init__()
        self.events, self.spec, self.train_rows = events, spec, train_rows
        self.cancelled, self.checkpoints, self.first_epoch = cancelled, checkpoints, first_epoch
        self.started = time.monotonic()
        self.diverged: str | None = None
        self.announced = False

    def _send(self, epoch: int, batch: int, logs, finished: bool) -> None:
        now = time.monotonic()
        epochs = int(self.spec.epochs)
        rows = self.train_rows if finished else batch * self.spec.batch_size
        elapsed = now - self.epoch_started
        done = (epoch - 1 - self.first_epoch) + (1.0 if finished else min(rows / max(self.train_rows, 1), 1.0))
        progress = train_pb2.TrainProgress(
            epoch=epoch,
            epochs=epochs,
            batch=batch,
            epoch_finished=finished,
            metrics={k: float(v) for k, v in (logs or {}).items()},
            samples_per_second=rows / elapsed if elapsed > 0 else 0.0,
            eta_seconds=(now - self.started) / done * (epochs - self.first_epoch - done) if done > 0 else 0.0,
        )
        if self.first_epoch and not self.announced:  # the first message after a resume says so
            progress.resumed_from_epoch, self.announced = self.first_epoch, True
        self.events.put(train_pb2.TrainResponse(progress=progress))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.epoch_started = epoch + 1, time.monotonic()
        self.batches = 0  # batches begun in this epoch

    # Batch *begins*, not ends: Keras turns every batch's logs into Python floats (a wait for the step
    # to finish) for any callback that hooks batch ends, which stalls its step pipeline. Batch begins
    # carry no logs; the metrics are read from the model only every progress_every_batches batches.
    def on_train_batch_begin(self, batch, logs=None):
        self.batches = batch + 1
        if self.cancelled.is_set():
            self.model.stop_training = True  # keras checks this after the batch that starts now
            return
        if batch == 0 or batch % self.spec.progress_every_batches:
            return
        logs = {k: float(v) for k, v in self.model.get_metrics_result().items()}  # after `batch` batches
        if not np.isfinite(logs.get("loss", 0.0)):
            self.diverged = f"loss became {logs['loss']} in epoch {self.epoch}, batch {batch}"
            self.model.stop_training = True
            return
        self._send(self.epoch, batch, logs, finished=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.cancelled.is_set() or self.diverged:
            return
        loss = float((logs or {}).get("loss", 0.0))
        if not np.isfinite(loss):
            self.diverged = f"loss became {loss} in epoch {epoch + 1}"
            self.model.stop_training = True
            return
        if self.batches % self.spec.progress_every_batches == 0:  # its last batch is due a report too
            self._send(
                epoch + 1, self.batches, {k: v for k, v in logs.items() if not k.startswith("val_")}, finished=False
            )
        if self.checkpoints:
            self.checkpoints.save(self.model, epoch + 1, logs)
        self._send(epoch + 1, 0, logs, finished=True)


def _early_stopping(spec) -> list[keras.callbacks.Callback]:
    """The early-stopping callback train.early_stopping asks for (none when unset)."""
    if not spec.HasField("early_stopping"):
        return []
    metric = spec.early_stopping.metric
    return [
        keras.callbacks.EarlyStopping(
            monitor=metric,
            patience=int(spec.early_stopping.patience),
            mode="max" if train_spec.STOPPING_METRICS[metric] else "min",
            restore_best_weights=True,
        )
    ]


# Model building is seeded through Keras' global random state: one run builds at a time.
_SEEDING = threading.Lock()


def _seeded_build(spec, *args) -> keras.Model:
    """models.build with weight initialisation (and dropout) seeded by train.seed."""
    with _SEEDING:
        keras.utils.set_random_seed(int(spec.seed) & 0xFFFFFFFF)
        return models.build(spec, *args)


def training_ops(fitted_ops, spec, train_rows: int, row_bytes: int) -> list:
    """The ops the TRAIN rows go through: the fitted ops, plus a seeded shuffle when they have none.

    The default shuffle (seed train.seed) pools every training row whose bytes fit the train cache
    budget (COOKLINE_TRAIN_CACHE_MB; at least the shuffle op's default pool). An explicit shuffle op
    sets the buffer and seed itself; `shuffle: {buffer: 1}` keeps the rows in dataset order."""
    if any(op.WhichOneof("kind") == "shuffle" for op in fitted_ops):
        return list(fitted_ops)
    least = spec_ops.OPS.get("shuffle").declared("buffer").default
    fits = feed_module.cache_budget_bytes() // max(row_bytes, 1)
    buffer = max(1, min(train_rows, max(least, fits)))
    return list(fitted_ops) + [pipeline_pb2.Op(shuffle=pipeline_pb2.ShuffleOp(buffer=buffer, seed=spec.seed))]


def _vocabulary_size(fitted_ops) -> int:
    """Token ids a text model embeds: padding, unknown and the last vectorize_text op's vocabulary."""
    texts = [op for op in fitted_ops if op.WhichOneof("kind") == "vectorize_text"]
    return len(texts[-1].fitted["vocabulary"].string_values) + 2 if texts else 0


class TrainServicer(train_pb2_grpc.TrainServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store
        self.warm = warm.WarmModels()
        self.collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect"))
        process_channel = channels.channel("process")
        self.process = process_pb2_grpc.ProcessServiceStub(process_channel)
        # Process with the responses left as bytes: batches are decoded as views (tensors.decode_batch).
        self.process_raw = process_channel.unary_stream(
            "/cookline.v1.ProcessService/Process",
            request_serializer=process_pb2.ProcessRequest.SerializeToString,
            response_deserializer=None,
        )

    @rpc
    def Train(self, request: train_pb2.TrainRequest, context) -> Iterator[train_pb2.TrainResponse]:
        pipeline = request.pipeline
        name = layout.check_name("pipeline.name", pipeline.name)
        spec = train_spec.resolve(pipeline.train)
        train_spec.check_export(pipeline)
        if request.run_id and (published := self._published_by_run(name, request.run_id)) is not None:
            # This run already published its model (the gateway that asked died before recording it):
            # answer with that version instead of training and publishing another one.
            self.store.delete_prefix(layout.run_prefix(request.run_id) + "checkpoints/")
            yield published
            return
        info = self.collect.GetDataset(collect_pb2.GetDatasetRequest(dataset=request.dataset), timeout=30).dataset
        fields = {f.name: f for f in info.fields}
        if "label" not in fields:
            raise invalid(f"dataset {info.ref.name!r}: training needs a 'label' tensor")
        regression = tensors.dtype_name(fields["label"].dtype) == "float32"  # collect.numeric_label
        class_names = list(fields["label"].class_names)
        if regression:
            train_spec.check_regression(spec)
        elif len(class_names) < 2:
            raise invalid(f"dataset {info.ref.name!r}: a classifier needs at least 2 classes, found {len(class_names)}")
        dataset = info.ref  # pinned version: every epoch reads the same data
        split = pipeline.split

        fitted_ops = list(
            self.process.Fit(process_pb2.FitRequest(dataset=dataset, split=split, ops=pipeline.process)).ops
        )
        # What the batches look like after the ops, and which tensor the model takes.
        schema = {f.name: (tensors.dtype_name(f.dtype), list(f.shape)) for f in info.fields}
        processed = ops_lib.output_fields(schema, fitted_ops)
        input_name, input_dtype, input_shape = train_spec.model_input(spec.model, processed)
        source = (input_name, input_dtype, input_shape, "float32" if regression else "int32")
        rows = splits.subset_rows(info, split)
        train_rows = rows[data_pb2.SUBSET_TRAIN]
        if spec.HasField("early_stopping") and rows[data_pb2.SUBSET_VALIDATION] == 0:
            raise invalid("train.early_stopping: needs validation rows (set split.validation > 0)")
        train_spec.check_class_weights(spec, class_names)
        class_weight = train_spec.class_weight_dict(spec, class_names, dict(info.statistics.label_counts))

        checkpoints = Checkpoints(self.store, request.run_id) if request.run_id else None
        resumed = record = None
        try:
            if spec.workers > 1:  # each worker downloads (and verifies) the checkpoint itself
                record = checkpoints.record() if checkpoints else None
            else:
                resumed = checkpoints.latest() if checkpoints else None
        except BaseException:  # e.g. DATA_LOSS: the checkpoint's bytes are not the ones written
            if checkpoints is not None:
                checkpoints.close()
            raise
        first_epoch, last_metrics = (resumed[0], resumed[2]) if resumed else (0, {})
        if record:
            first_epoch = int(record["epoch"])
        log.info(
            "run %s: training %s on %s@%s (%d training rows, input %s %s %s)%s",
            request.run_id,
            spec.model,
            dataset.name,
            dataset.version,
            train_rows,
            input_name,
            input_dtype,
            input_shape,
            f", resuming after epoch {first_epoch}" if first_epoch else "",
        )

        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        row_bytes = int(np.prod(input_shape, dtype=np.int64)) * np.dtype(input_dtype).itemsize
        warm_key = None
        if spec.workers > 1:  # a distributed run: the workers fit (each in a fresh process), this one publishes
            try:  # worker 0 writes the checkpoints
                model, last_metrics = yield from distributed.fit(
                    request,
                    spec,
                    training_ops(fitted_ops, spec, train_rows, row_bytes),
                    source,
                    rows,
                    len(class_names),
                    _vocabulary_size(fitted_ops),
                    class_weight,
                    cancelled,
                    record,
                )
            finally:
                if checkpoints:
                    checkpoints.close()
        else:
            train_data = self._feed(
                dataset,
                split,
                data_pb2.SUBSET_TRAIN,
                training_ops(fitted_ops, spec, train_rows, row_bytes),
                spec.batch_size,
                source,
                cancelled,
                first_epoch,
                train_rows,
            )
            val_data = None
            if rows[data_pb2.SUBSET_VALIDATION] > 0:
                val_data = self._feed(
                    dataset,
                    split,
                    data_pb2.SUBSET_VALIDATION,
                    fitted_ops,
                    EVAL_BATCH,
                    source,
                    cancelled,
                    first_epoch,
                    rows[data_pb2.SUBSET_VALIDATION],
                )
            # built (or restored) while the first batches stream in
            warm_key = warm.key(spec, input_shape, len(class_names), input_dtype, _vocabulary_size(fitted_ops))
            model = (
                resumed[1]
                if resumed
                else self.warm.take(
                    warm_key,
                    _seeded_build(spec, input_shape, len(class_names), input_dtype, _vocabulary_size(fitted_ops)),
                )
            )

            # fit() runs on its own thread; this one streams its progress to the caller.
            events: queue.Queue = queue.Queue()
            outcome: dict = {}
            progress = _Progress(events, spec, train_rows, cancelled, checkpoints, first_epoch)
            callbacks = [progress] + _early_stopping(spec)

            def run_fit():
                try:
                    model.fit(
                        train_data.dataset(),
                        steps_per_epoch=train_data.steps(),
                        epochs=int(spec.epochs),
                        validation_data=val_data.dataset() if val_data else None,
                        validation_steps=val_data.steps() if val_data else None,
                        initial_epoch=first_epoch,
                        shuffle=False,  # process (or this feed) already shuffles
                        verbose=0,
                        callbacks=callbacks,
                        class_weight=class_weight,
                    )
                except BaseException as exc:  # reported on the RPC
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

        evaluation = self._evaluate(model, dataset, split, rows, fitted_ops, source, class_names, cancelled)
        version = self._publish(
            name,
            model,
            input_name,
            fitted_ops,
            {f.name: f for f in info.fields},
            class_names,
            last_metrics,
            evaluation,
            dataset,
            request,
        )
        if checkpoints:
            checkpoints.discard()
        if warm_key is not None:
            self.warm.give(warm_key, model)  # the run ended cleanly: the next one like it skips tracing
        yield train_pb2.TrainResponse(
            result=train_pb2.TrainResult(
                model=model_pb2.ModelRef(name=name, version=version), metrics=last_metrics, evaluation=evaluation
            )
        )

    def _published_by_run(self, name: str, run_id: str) -> train_pb2.TrainResponse | None:
        """The result of the version of `name` whose record carries `run_id`, or None: publishing is
        idempotent per run. Reads the records newest first (a model has few versions)."""
        for version in reversed(layout.model_versions(self.store, name)):
            try:
                meta = layout.read_model_metadata(self.store, name, version)
            except Fail:  # deleted meanwhile
                continue
            if meta.get("run_id") == run_id:
                log.info(
                    "run %s: model %s version %d is already published by this run; not training again",
                    run_id,
                    name,
                    version,
                )
                evaluation = (
                    json_format.ParseDict(meta["evaluation"], train_pb2.Evaluation(), ignore_unknown_fields=True)
                    if meta.get("evaluation")
                    else None
                )
                return train_pb2.TrainResponse(
                    result=train_pb2.TrainResult(
                        model=model_pb2.ModelRef(name=name, version=version),
                        metrics=meta.get("metrics") or {},
                        evaluation=evaluation,
                    )
                )
        return None

    @rpc
    def TrainWorker(self, request: train_pb2.TrainWorkerRequest, context) -> Iterator[train_pb2.TrainWorkerResponse]:
        yield from distributed.serve_worker(request, context)

    def _evaluate(self, model, dataset, split, rows, fitted_ops, source, class_names, cancelled):
        """Evaluation on the test split, else the validation split; None when nothing is held out."""
        subset = (
            data_pb2.SUBSET_TEST
            if rows[data_pb2.SUBSET_TEST] > 0
            else data_pb2.SUBSET_VALIDATION
            if rows[data_pb2.SUBSET_VALIDATION] > 0
            else None
        )
        if subset is None:
            return None
        request = process_pb2.ProcessRequest(dataset=dataset, split=split, subset=subset, ops=fitted_ops)
        feed = EpochFeed(self.process_raw, request, EVAL_BATCH, source, cancelled, budget_bytes=0)
        return evaluate_model(model, feed.batches(), class_names, subset)

    def _feed(self, dataset, split, subset, fitted_ops, batch_size, source, cancelled, first_epoch, rows) -> EpochFeed:
        """The epochs of one subset, already pulling the first."""
        request = process_pb2.ProcessRequest(dataset=dataset, split=split, subset=subset, ops=fitted_ops)
        return EpochFeed(
            self.process_raw, request, batch_size, source, cancelled, first_epoch=first_epoch, rows=rows
        ).start()

    def _publish(
        self, name, model, input_name, fitted_ops, fields, class_names, metrics, evaluation, dataset, request
    ) -> int:
        """Exports the model (raw inputs in, every fitted op built in) and publishes it as the next
        version (cookline.json last)."""
        existing = layout.model_versions(self.store, name, published_only=False)
        version = (existing[-1] if existing else 0) + 1
        prefix = layout.model_prefix(name, version)
        with tempfile.TemporaryDirectory(prefix="cookline-export-") as tmp:
            inputs = models.export(model, fitted_ops, fields, input_name, class_names, tmp)
            if request.pipeline.export.tfjs:
                tfjs.write(model, fitted_ops, fields, class_names, name, version, os.path.join(tmp, "tfjs"))
            files = {}
            for root, _dirs, names in os.walk(tmp):
                for file_name in names:
                    path = os.path.join(root, file_name)
                    files[os.path.relpath(path, tmp).replace(os.sep, "/")] = path
            metadata = {
                "name": name,
                "version": version,
                "class_names": class_names,
                # the numeric columns, as before raw inputs (readers of older records look here)
                "feature_columns": inputs.get("features", {}).get("columns", []),
                # the raw collected tensors the model takes: name -> dtype, shape, kind, columns, ...
                "inputs": inputs,
                # a regressor (no class names) answers its value as "scores" [rows, 1]
                "outputs": {
                    "scores": {"dtype": "float32", "shape": [-1, len(class_names) or 1]},
                    **({"label": {"dtype": "string", "shape": [-1]}} if class_names else {}),
                },
                "task": "classification" if class_names else "regression",
                "metrics": metrics,
                "evaluation": (
                    json_format.MessageToDict(evaluation, preserving_proto_field_name=True) if evaluation else None
                ),
                # The fitted ops (means, vocabularies, lookups), all built into the SavedModel: for lineage
                # and for exports that rebuild them (TF.js).
                "process": [json_format.MessageToDict(op, preserving_proto_field_name=True) for op in fitted_ops],
                "dataset": {"name": dataset.name, "version": dataset.version},
                "run_id": request.run_id,
                "pipeline": json_format.MessageToDict(request.pipeline, preserving_proto_field_name=True),
                "formats": ["saved_model"] + (["tfjs"] if request.pipeline.export.tfjs else []),
                "framework": {"tensorflow": tf.__version__, "keras": keras.__version__},
                "created_at": layout.now(),
                # every file's sha256, verified by serve as it downloads the version
                layout.CHECKSUMS: layout.checksums(files),
            }
            self.store.publish(prefix, files, layout.MODEL_METADATA, json.dumps(metadata, indent=1).encode())
        log.info("model %s version %d published", name, version)
        return version

"""TrainService: trains on batches streamed through process from collect, every epoch,
streams progress, and publishes models/<name>/<version>/ (SavedModel + cookline.json).

TrainServicer.Train reads as the steps of a run; each step is a method taking the run's Plan
(services/train/plan.py)."""

from __future__ import annotations

import dataclasses
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

from cookline import channels, config, tensors
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
    records_pb2,
    train_pb2,
    train_pb2_grpc,
)
from services.common import layout, splits
from services.common.errors import Fail, invalid, rpc
from services.common.store import ObjectStore
from services.process import ops as ops_lib
from services.train import detection, distributed, models, tfjs, transfer, warm
from services.train import feed as feed_module
from services.train.attempts import RunAttempts
from services.train.checkpoints import Checkpoints
from services.train.evaluate import evaluate_model
from services.train.feed import EpochFeed, FeedSize
from services.train.plan import Fitted, Plan, Resume

log = logging.getLogger("cookline.train")

# Validation rows per batch: no gradient, so larger batches are cheaper.
EVAL_BATCH = 1024
_DONE = object()


class _Progress(keras.callbacks.Callback):
    """Runs on the fit thread: streams progress, checkpoints each epoch, stops on cancel or NaN."""

    def __init__(self, events: queue.Queue, spec, train_rows: int, cancelled: threading.Event, resume: Resume):
        """`resume` says the epoch the fit starts after and the checkpoints to save each epoch to."""
        super().__init__()
        self.events, self.spec, self.train_rows = events, spec, train_rows
        self.cancelled, self.checkpoints, self.first_epoch = cancelled, resume.checkpoints, resume.first_epoch
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


def _seeded_build(spec, *args, base: keras.Model | None = None) -> keras.Model:
    """models.build (models.build_on a base's network) with weight initialisation (and dropout) seeded
    by train.seed."""
    with _SEEDING:
        keras.utils.set_random_seed(int(spec.seed) & 0xFFFFFFFF)
        return models.build(spec, *args) if base is None else models.build_on(base, spec, *args[:2])


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


def _training_ops(plan: Plan) -> list:
    """training_ops for a planned run."""
    return training_ops(plan.fitted_ops, plan.spec, plan.train_rows, plan.row_bytes)


class TrainServicer(train_pb2_grpc.TrainServiceServicer):
    def __init__(self, store: ObjectStore):
        self.store = store
        self.warm = warm.WarmModels()
        self.attempts = RunAttempts()
        self.collect = collect_pb2_grpc.CollectServiceStub(channels.channel("collect"))
        process_channel = channels.channel("process", options=config.data_plane_options())
        self.process = process_pb2_grpc.ProcessServiceStub(process_channel)
        # Process with the responses left as bytes: batches are decoded as views (tensors.decode_batch).
        self.process_raw = process_channel.unary_stream(
            "/cookline.v1.ProcessService/Process",
            request_serializer=process_pb2.ProcessRequest.SerializeToString,
            response_deserializer=None,
        )

    @rpc
    def Train(self, request: train_pb2.TrainRequest, context) -> Iterator[train_pb2.TrainResponse]:
        """A training run: resolve the spec, answer at once if this run already published, plan (the
        dataset, the fitted ops), resume from the run's checkpoint, fit (here, or on the workers),
        evaluate, then export and publish the model."""
        # Response headers at once: they commit the call on the caller's side (gRPC's retry design, A6),
        # so if this process dies before the first progress message the caller sees UNAVAILABLE (the
        # gateway retries the stage) instead of the call waiting in a transparent retry. The chaos soak
        # saw a Train call hang for ever when train was killed a second after it arrived, unanswered.
        context.send_initial_metadata(())
        name = layout.check_name("pipeline.name", request.pipeline.name)
        spec = train_spec.resolve(request.pipeline.train)
        train_spec.check_export(request.pipeline)
        # Registered first: a call cancelled while it plans must not go on to fit and publish (a
        # callback added after the call ended is never called, so that case is set here).
        cancelled = threading.Event()
        if not context.add_callback(cancelled.set):
            cancelled.set()
        with self.attempts.sole(request.run_id, cancelled):
            yield from self._train(request, name, spec, cancelled)

    def _train(self, request: train_pb2.TrainRequest, name: str, spec, cancelled: threading.Event):
        """Train's steps, run while this call is the run's only one (RunAttempts.sole)."""
        read: set[int] = set()  # versions whose records were read: the check before publishing skips them
        if (published := self._published_by_run(name, request.run_id, read)) is not None:
            # This run already published its model (the gateway that asked died before recording it,
            # or an earlier call of the run finished its publish): answer with that version instead of
            # training and publishing another one.
            yield published
            return
        plan = self._plan(request, name, spec, cancelled)
        if cancelled.is_set():
            raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
        checkpoints = Checkpoints(self.store, request.run_id) if request.run_id else None
        try:
            if spec.workers > 1:  # distributed: worker processes fit, worker 0 checkpoints, this one publishes;
                # every worker resumes from the run's last checkpoint (downloading and verifying it itself)
                record = checkpoints.record() if checkpoints else None
                fitted = yield from distributed.fit(plan, _training_ops(plan), record)
            else:
                fitted = yield from self._fit(plan, self._resume(plan, checkpoints))
        finally:
            if checkpoints:
                checkpoints.close()
        evaluation = self._evaluate(plan, fitted.model)
        if train_spec.is_detector(spec.model) and evaluation is not None:  # held-out mAP: a detector's headline
            fitted.metrics = {**fitted.metrics, **evaluation.metrics}
        if (published := self._published_by_run(name, request.run_id, read)) is not None:
            # a call of this run on another train replica published while this one fitted
            yield published
            return
        version = self._publish(plan, fitted, evaluation)
        if checkpoints:
            checkpoints.discard()
        if fitted.warm_key is not None:
            self.warm.give(fitted.warm_key, fitted.model)  # the run ended cleanly: the next one like it skips tracing
        yield train_pb2.TrainResponse(
            result=train_pb2.TrainResult(
                model=model_pb2.ModelRef(name=name, version=version), metrics=fitted.metrics, evaluation=evaluation
            )
        )

    def _plan(self, request: train_pb2.TrainRequest, name: str, spec, cancelled: threading.Event) -> Plan:
        """Resolves the dataset (its version pinned), checks it fits the spec, and has process fit the
        pipeline's ops on the training rows. INVALID_ARGUMENT names what does not fit."""
        pipeline = request.pipeline
        info = self.collect.GetDataset(collect_pb2.GetDatasetRequest(dataset=request.dataset), timeout=30).dataset
        fields = {f.name: f for f in info.fields}
        if "label" not in fields:
            raise invalid(f"dataset {info.ref.name!r}: training needs a 'label' tensor")
        regression = tensors.dtype_name(fields["label"].dtype) == "float32"  # collect.numeric_label
        class_names = list(fields["label"].class_names)
        if regression:
            train_spec.check_regression(spec)
        elif len(class_names) < (1 if train_spec.is_detector(spec.model) else 2):
            raise invalid(f"dataset {info.ref.name!r}: a classifier needs at least 2 classes, found {len(class_names)}")
        fitted_ops = list(
            self.process.Fit(process_pb2.FitRequest(dataset=info.ref, split=pipeline.split, ops=pipeline.process)).ops
        )
        # What the batches look like after the ops, and which tensor the model takes.
        schema = {f.name: (tensors.dtype_name(f.dtype), list(f.shape)) for f in info.fields}
        processed = ops_lib.output_fields(schema, fitted_ops)
        train_spec.check_detection_data(spec.model, processed)
        input_name, input_dtype, input_shape = train_spec.model_input(spec.model, processed)
        rows = splits.subset_rows(info, pipeline.split)
        if spec.HasField("early_stopping") and rows[data_pb2.SUBSET_VALIDATION] == 0:
            raise invalid("train.early_stopping: needs validation rows (set split.validation > 0)")
        train_spec.check_class_weights(spec, class_names)
        if spec.weights:  # the weights file is there before anything streams (nothing is downloaded)
            transfer.weights_file(spec, models.mobilenet_size(spec, input_shape))
        base = transfer.load(self.store, spec) if spec.base else None
        if base is not None:
            transfer.check_fits(base.network, spec, input_name, input_dtype, input_shape)
            if train_spec.is_detector(spec.model):  # the backbone it gives, and the layer counts on it
                transfer.check_part(detection.backbone_of(base.network, spec.base), spec)
        return Plan(
            request=request,
            name=name,
            spec=spec,
            info=info,
            fitted_ops=fitted_ops,
            source=(input_name, input_dtype, list(input_shape), "float32" if regression else "int32"),
            rows=rows,
            class_weight=train_spec.class_weight_dict(spec, class_names, dict(info.statistics.label_counts)),
            cancelled=cancelled,
            base=base,
        )

    def _resume(self, plan: Plan, checkpoints: Checkpoints | None) -> Resume:
        """Where the fit starts: after the run's last checkpoint (DATA_LOSS when its bytes are not the
        ones written), else at epoch 0."""
        resumed = checkpoints.latest() if checkpoints else None
        resume = Resume(checkpoints)
        if resumed:
            resume.first_epoch, resume.model, resume.metrics = resumed
        log.info(
            "run %s: training %s on %s@%s (%d training rows, input %s %s %s)%s",
            plan.request.run_id,
            plan.spec.model,
            plan.dataset.name,
            plan.dataset.version,
            plan.train_rows,
            plan.input_name,
            plan.input_dtype,
            plan.input_shape,
            f", resuming after epoch {resume.first_epoch}" if resumed else "",
        )
        return resume

    def _fit(self, plan: Plan, resume: Resume):
        """Fits in this process: opens the feeds, builds the model (or takes the restored one), and
        runs model.fit on its own thread while this one yields its progress. Returns a Fitted."""
        spec, first_epoch = plan.spec, resume.first_epoch
        train_data = self._feed(
            plan, data_pb2.SUBSET_TRAIN, _training_ops(plan), FeedSize(spec.batch_size, first_epoch)
        )
        val_data = None
        if plan.validation_rows > 0:
            size = FeedSize(EVAL_BATCH, first_epoch)
            val_data = self._feed(plan, data_pb2.SUBSET_VALIDATION, plan.fitted_ops, size)
        # built (or restored) while the first batches stream in
        num_classes, vocabulary = len(plan.class_names), plan.vocabulary_size
        warm_key = None
        model = resume.model
        if train_spec.is_detector(spec.model):  # not kept warm: its loss is built for its classes
            if model is None:
                with _SEEDING:
                    keras.utils.set_random_seed(int(spec.seed) & 0xFFFFFFFF)
                    if plan.base is None:
                        model = detection.build(spec, plan.input_shape, num_classes, plan.input_dtype)
                    else:
                        model = detection.build_on(plan.base.network, spec, plan.input_shape, num_classes)
        elif spec.base or spec.weights:  # weights that are not fresh: no warm model stands in
            if model is None:
                base = plan.base.network if plan.base else None
                model = _seeded_build(spec, plan.input_shape, num_classes, plan.input_dtype, vocabulary, base=base)
        else:
            warm_key = warm.key(spec, plan.input_shape, num_classes, plan.input_dtype, vocabulary)
            if model is None:
                model = self.warm.take(
                    warm_key, _seeded_build(spec, plan.input_shape, num_classes, plan.input_dtype, vocabulary)
                )
        epochs = int(spec.epochs) + (int(spec.fine_tune.epochs) if spec.HasField("fine_tune") else 0)
        events: queue.Queue = queue.Queue()
        outcome: dict = {}
        shown = pipeline_pb2.TrainSpec()  # progress counts the epochs of both phases
        shown.CopyFrom(spec)
        shown.epochs = epochs
        progress = _Progress(events, shown, plan.train_rows, plan.cancelled, resume)
        callbacks = [progress] + _early_stopping(spec)

        def fit(train_feed: EpochFeed, val_feed: EpochFeed | None, start: int, end: int) -> None:
            model.fit(
                train_feed.dataset(),
                steps_per_epoch=train_feed.steps(),
                epochs=end,
                validation_data=val_feed.dataset() if val_feed else None,
                validation_steps=val_feed.steps() if val_feed else None,
                initial_epoch=start,
                shuffle=False,  # process (or this feed) already shuffles
                verbose=0,
                callbacks=callbacks,
                class_weight=plan.class_weight,
            )

        def run_fit():
            try:
                start, feeds = first_epoch, (train_data, val_data)
                if start < spec.epochs:
                    fit(*feeds, start, int(spec.epochs))
                    start, feeds = int(spec.epochs), None  # those feeds ran ahead: new ones for the next phase
                if start < epochs and not plan.cancelled.is_set() and not progress.diverged:  # train.fine_tune
                    transfer.unfreeze(model, spec)
                    compile_model = (
                        detection.compile_model if train_spec.is_detector(spec.model) else models.compile_model
                    )
                    compile_model(model, spec, num_classes, spec.fine_tune.learning_rate)
                    log.info("run %s: fine-tuning from epoch %d", plan.request.run_id, start + 1)
                    if feeds is None:
                        feeds = (
                            self._feed(
                                plan, data_pb2.SUBSET_TRAIN, _training_ops(plan), FeedSize(spec.batch_size, start)
                            ),
                            self._feed(plan, data_pb2.SUBSET_VALIDATION, plan.fitted_ops, FeedSize(EVAL_BATCH, start))
                            if val_data
                            else None,
                        )
                    fit(*feeds, start, epochs)
            except BaseException as exc:  # reported on the RPC
                outcome["error"] = exc
            finally:
                events.put(_DONE)

        worker = threading.Thread(target=run_fit, name=f"fit-{plan.request.run_id}", daemon=True)
        worker.start()
        last_metrics = resume.metrics
        done = False
        try:
            while (event := events.get()) is not _DONE:
                if event.progress.epoch_finished:
                    last_metrics = dict(event.progress.metrics)
                yield event
            done = True
        finally:  # also when the call is dropped at a yield: the fit stops before the run is let go
            if not done:
                plan.cancelled.set()
            worker.join()
        if plan.cancelled.is_set():
            raise Fail(grpc.StatusCode.CANCELLED, "training cancelled")
        if progress.diverged:
            raise invalid(f"train: training diverged: {progress.diverged}; lower train.learning_rate")
        if "error" in outcome:
            raise outcome["error"]
        return Fitted(model, last_metrics, warm_key)

    def _published_by_run(self, name: str, run_id: str, read: set[int]) -> train_pb2.TrainResponse | None:
        """The result of the version of `name` whose record carries `run_id` (the run's checkpoints
        deleted: they are done with), or None: publishing is idempotent per run. Reads the records
        newest first, skipping the versions in `read` (already read, not this run's) and adding the
        ones it reads, so a second look reads only versions published since the first."""
        if not run_id:
            return None
        for version in reversed(layout.model_versions(self.store, name)):
            if version in read:
                continue
            read.add(version)
            try:
                record = layout.read_model_record(self.store, name, version)
            except Fail:  # deleted meanwhile
                continue
            if record.run_id == run_id:
                log.info(
                    "run %s: model %s version %d is already published by this run; answering with it",
                    run_id,
                    name,
                    version,
                )
                self.store.delete_prefix(layout.run_prefix(run_id) + "checkpoints/")
                return train_pb2.TrainResponse(
                    result=train_pb2.TrainResult(
                        model=model_pb2.ModelRef(name=name, version=version),
                        metrics=record.metrics,
                        evaluation=record.evaluation if record.HasField("evaluation") else None,
                    )
                )
        return None

    @rpc
    def TrainWorker(self, request: train_pb2.TrainWorkerRequest, context) -> Iterator[train_pb2.TrainWorkerResponse]:
        yield from distributed.serve_worker(request, context)

    def _evaluate(self, plan: Plan, model) -> train_pb2.Evaluation | None:
        """Evaluation on the test split, else the validation split; None when nothing is held out."""
        subset = (
            data_pb2.SUBSET_TEST
            if plan.rows[data_pb2.SUBSET_TEST] > 0
            else data_pb2.SUBSET_VALIDATION
            if plan.validation_rows > 0
            else None
        )
        if subset is None:
            return None
        request = process_pb2.ProcessRequest(dataset=plan.dataset, split=plan.split, subset=subset, ops=plan.fitted_ops)
        feed = EpochFeed(self.process_raw, request, plan.source, plan.cancelled, FeedSize(EVAL_BATCH, budget_bytes=0))
        if train_spec.is_detector(plan.spec.model):
            return detection.evaluate(model, plan, feed.full_batches(), subset)
        return evaluate_model(model, feed.batches(), plan.class_names, subset)

    def _feed(self, plan: Plan, subset: data_pb2.Subset, fitted_ops, size: FeedSize) -> EpochFeed:
        """The epochs of one subset (from the first epoch the fit runs), already pulling the first."""
        request = process_pb2.ProcessRequest(dataset=plan.dataset, split=plan.split, subset=subset, ops=fitted_ops)
        size = dataclasses.replace(size, rows=plan.rows[subset])
        if train_spec.is_detector(plan.spec.model):  # its targets are drawn from each batch's boxes
            feed = detection.DetectionFeed(
                self.process_raw, request, plan.source, plan.cancelled, size, num_classes=len(plan.class_names)
            )
            return feed.start()
        return EpochFeed(self.process_raw, request, plan.source, plan.cancelled, size).start()

    def _publish(self, plan: Plan, fitted: Fitted, evaluation: train_pb2.Evaluation | None) -> int:
        """Claims the next version of the model (create-only: one publisher per number), exports the
        model into it (raw inputs in, every fitted op built in), and publishes it, cookline.json last."""
        request, name = plan.request, plan.name
        trained = models.Trained(fitted.model, plan.fitted_ops, plan.fields, plan.input_name, plan.class_names)
        with (
            layout.claim_model_version(self.store, name, request.run_id) as claim,
            tempfile.TemporaryDirectory(prefix="cookline-export-") as tmp,
        ):
            if train_spec.is_detector(plan.spec.model):  # boxes, labels, scores; non-max suppression built in
                inputs = detection.export(trained, plan.spec, tmp)
            else:
                inputs = models.export(trained, tmp)
            fitted.model.save(os.path.join(tmp, transfer.NETWORK))  # what a later train.base starts from
            if request.pipeline.export.tfjs:
                tfjs.write(trained, name, claim.version, os.path.join(tmp, "tfjs"))
            files = {}
            for root, _dirs, names in os.walk(tmp):
                for file_name in names:
                    path = os.path.join(root, file_name)
                    files[os.path.relpath(path, tmp).replace(os.sep, "/")] = path
            record = _model_record(plan, inputs, fitted.metrics, evaluation)
            version = layout.publish_model(self.store, claim, record, files)
        log.info("model %s version %d published", name, version)
        return version


def _model_record(plan: Plan, inputs: dict, metrics: dict, evaluation) -> records_pb2.ModelRecord:
    """The model record (cookline.json) of a trained model; publish_model fills in its name, version,
    created_at and checksums."""
    class_names, pipeline = plan.class_names, plan.request.pipeline
    record = records_pb2.ModelRecord(
        class_names=class_names,
        # the numeric columns, as before raw inputs (readers of older records look here)
        feature_columns=inputs.get("features", {}).get("columns", []),
        task="detection"
        if train_spec.is_detector(plan.spec.model)
        else "classification"
        if class_names
        else "regression",
        metrics=metrics,
        evaluation=evaluation,
        # The fitted ops (means, vocabularies, lookups), all built into the SavedModel: for lineage
        # and for exports that rebuild them (TF.js).
        process=plan.fitted_ops,
        dataset=data_pb2.DatasetRef(name=plan.dataset.name, version=plan.dataset.version),
        run_id=plan.request.run_id,
        pipeline=pipeline,
        formats=["saved_model"] + (["tfjs"] if pipeline.export.tfjs else []),
        framework={"tensorflow": tf.__version__, "keras": keras.__version__},
    )
    # lineage: the model it was fine-tuned from (train.base; the registry keeps that version from being
    # deleted), or the pretrained weights file it started from (train.weights)
    if plan.base is not None:
        record.base.CopyFrom(records_pb2.BaseModel(**plan.base.lineage))
    elif plan.spec.weights:
        path = transfer.weights_file(plan.spec, models.mobilenet_size(plan.spec, plan.input_shape))
        record.base.CopyFrom(records_pb2.BaseModel(uri=path))
    # the raw collected tensors the model takes: name -> dtype, shape, kind, columns, ...
    json_format.ParseDict(inputs, record.inputs)
    if train_spec.is_detector(plan.spec.model):  # boxes, labels and scores per detection (docs/serving.md)
        json_format.ParseDict(detection.outputs(plan.spec), record.outputs)
        return record
    # a regressor (no class names) answers its value as "scores" [rows, 1]
    record.outputs.scores.CopyFrom(records_pb2.OutputRecord(dtype="float32", shape=[-1, len(class_names) or 1]))
    if class_names:
        record.outputs.label.CopyFrom(records_pb2.OutputRecord(dtype="string", shape=[-1]))
    return record

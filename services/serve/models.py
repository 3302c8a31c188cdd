"""The models a serve process answers for: deploy (load, warm up, swap), unload,
look-up for predictions, and start-up from the store's deployed markers.

Per model name one version is deployed: it answers requests with version 0 and
requests naming its version. Deploying another version loads and warms it while
the old one keeps answering, switches new requests over in one step, then
closes the old batcher, which answers what was already queued: no request fails.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
import tensorflow as tf
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2

from cookline import tensors
from cookline.v1 import model_pb2, records_pb2, serve_pb2
from services.common import layout
from services.common.errors import Fail, invalid
from services.common.store import ObjectStore
from services.serve import compiled
from services.serve import inputs as inputs_lib
from services.serve.batcher import Batcher
from services.serve.inputs import InputSpec, Limits
from services.serve.stats import ModelStats

log = logging.getLogger("cookline.serve")

DEFAULT_MAX_BATCH_SIZE = 256
MAX_BATCH_SIZE = 65536
MAX_QUEUE_DELAY_MS = 10_000


def unavailable(message: str) -> Fail:
    return Fail(grpc.StatusCode.UNAVAILABLE, message)


def settle_heap() -> None:
    """After a load, swap or unload: collects the garbage it left, then moves every object
    alive now out of the cyclic garbage collector's reach (gc.freeze).

    A loaded TensorFlow model is some 400,000 Python objects, which every full collection
    walks again; the objects a request allocates set off such collections as they
    come and go, and each one holds the GIL (and the event loop) for tens of ms. Frozen,
    they are never walked while serving: in process, serve's one-row path (decode, checks,
    batcher, compiled call, answer) spent 241 against 277 to 300 us of CPU per call. A
    retired version's objects are collected here, once (unfreeze, collect, freeze again)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@dataclass
class LoadedModel:
    """One model version, loaded, warmed up and answering through its batcher."""

    name: str
    version: int
    class_names: list[str]
    specs: dict[str, InputSpec]
    batching: serve_pb2.BatchingConfig
    policy: str
    batcher: Batcher = field(repr=False)
    limits: Limits = field(default_factory=Limits, repr=False)
    # cookline.json "outputs" (name -> dtype, shape) and "task"; see outputs_of
    outputs: dict = field(default_factory=dict, repr=False)
    task: str = "classification"
    execution: int = serve_pb2.EXECUTION_PATH_SIGNATURE  # serve_pb2.ExecutionPath
    execution_detail: str = ""  # why the signature runs
    class_array: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.class_array = np.asarray([c.encode() for c in self.class_names], dtype=object)

    @property
    def ref(self) -> model_pb2.ModelRef:
        return model_pb2.ModelRef(name=self.name, version=self.version)

    def metadata(self) -> serve_pb2.ModelMetadata:
        meta = model_metadata(
            self.name, self.version, self.class_names, self.specs, self.limits, self.outputs, self.task
        )
        meta.batching.CopyFrom(self.batching)
        meta.version_policy = self.policy
        meta.execution = self.execution  # type: ignore[assignment]
        meta.execution_detail = self.execution_detail
        return meta

    def labels(self, scores: np.ndarray) -> np.ndarray:
        """The most probable class name (bytes) of each row."""
        return self.class_array[scores.argmax(axis=1)]

    def answer(self, result) -> dict[str, np.ndarray]:
        """The outputs of one request, by name, from what the model call returned for its rows: a
        classifier's scores (its label is picked here), a regressor's scores, a detector's dict of
        "boxes", "labels" (bytes) and "scores"."""
        if isinstance(result, dict):
            return result
        scores = result.astype(np.float32, copy=False)
        return {"scores": scores, "label": self.labels(scores)} if self.class_names else {"scores": scores}

    def check(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The request's decoded inputs, checked row by row against the model's inputs
        (INVALID_ARGUMENT naming the input and the row): what the batcher queues."""
        unknown = sorted(set(arrays) - set(self.specs))
        if unknown:
            raise invalid(
                f"inputs[{unknown[0]!r}]: unknown input (model {self.name!r} takes "
                f"{', '.join(repr(n) for n in self.specs)})"
            )
        rows = None
        out = {}
        for name, spec in self.specs.items():
            if name not in arrays:
                raise invalid(f"inputs[{name!r}]: required ({spec.describe()})")
            array = arrays[name]
            if array.ndim == 0:
                raise invalid(f"inputs[{name!r}]: a scalar, expected {spec.describe()}")
            if array.shape[0] > MAX_ROWS:
                raise Fail(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"inputs[{name!r}]: {array.shape[0]} rows, at most {MAX_ROWS} per request",
                )
            if array.shape[0] < 1:
                raise invalid(f"inputs[{name!r}]: no rows")
            if rows is not None and array.shape[0] != rows:
                raise invalid(f"inputs[{name!r}]: {array.shape[0]} rows, but inputs[{next(iter(out))!r}] has {rows}")
            rows = array.shape[0]
            out[name] = inputs_lib.check(spec, array, self.limits)
        return out


# Rows one request may carry; more is RESOURCE_EXHAUSTED.
MAX_ROWS = 1 << 20


class load_predict:  # used as a function: load_predict(dir)(inputs) -> scores
    """The SavedModel's serving_default signature as named raw inputs -> scores (numpy); with
    `every_output` (a detector), -> a dict of every output (numpy; strings as bytes objects).
    bench/serving.py times this same function in process, so serve's overhead is
    measured against the very call it makes. `input_names`: the signature's inputs, sorted.

    (Its flat form, the private `_call_flat`, skips the keyword binding: 0.04 ms of a
    0.14 ms one-row call. It sped up the in-process baseline more than serve: the
    streaming ratio fell from 0.67 to 0.54 for 5% more unary requests/s. Not used.)
    """

    def __init__(self, saved_model_dir: str, every_output: bool = False):
        self._loaded = tf.saved_model.load(saved_model_dir)  # keeps the variables alive
        self.signature = self._loaded.signatures["serving_default"]
        self.input_names = sorted(self.signature.structured_input_signature[1])
        self.every_output = every_output

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray | dict[str, np.ndarray]:
        out = self.signature(**{name: tf.constant(value) for name, value in inputs.items()})
        if self.every_output:
            return {name: tensor.numpy() for name, tensor in out.items()}
        return out["scores"].numpy()


_DTYPES = {"float32": tensors.DataType.DATA_TYPE_FLOAT32, "string": tensors.DataType.DATA_TYPE_STRING}
_KINDS = {
    "numeric": serve_pb2.INPUT_KIND_NUMERIC,
    "category": serve_pb2.INPUT_KIND_CATEGORY,
    "text": serve_pb2.INPUT_KIND_TEXT,
    "image": serve_pb2.INPUT_KIND_IMAGE,
}


def input_spec(spec: InputSpec, limits: Limits) -> serve_pb2.TensorSpec:
    """The cookline TensorSpec of one raw input."""
    out = serve_pb2.TensorSpec(
        dtype=_DTYPES[spec.dtype],
        shape=spec.shape,
        kind=_KINDS[spec.kind],
        columns=spec.columns,
        encodings=spec.encodings,
    )
    if spec.kind == "image":
        out.max_bytes = limits.max_image_bytes
        if spec.image:
            out.image.CopyFrom(
                serve_pb2.ImageSize(
                    height=int(spec.image.get("height", 0)),
                    width=int(spec.image.get("width", 0)),
                    channels=int(spec.image.get("channels", 0)),
                )
            )
    return out


def outputs_of(record: records_pb2.ModelRecord) -> dict[str, dict]:
    """What the signature answers, name -> {dtype, shape}, in answer order: a detector's boxes, labels
    and scores, else scores and (a classifier's) label. Reading the record filled in an older one's."""
    outputs = record.outputs
    names = ("boxes", "labels", "scores") if outputs.HasField("boxes") else ("scores", "label")
    return {
        name: {"dtype": getattr(outputs, name).dtype, "shape": list(getattr(outputs, name).shape)}
        for name in names
        if outputs.HasField(name)
    }


def model_metadata(
    name: str,
    version: int,
    class_names: list[str],
    specs: dict[str, InputSpec],
    limits: Limits,
    outputs: dict[str, dict],
    task: str,
) -> serve_pb2.ModelMetadata:
    features = specs.get("features")
    return serve_pb2.ModelMetadata(
        model=model_pb2.ModelRef(name=name, version=version),
        inputs={n: input_spec(s, limits) for n, s in specs.items()},
        class_names=class_names,
        feature_columns=features.columns if features else [],
        outputs={
            n: serve_pb2.TensorSpec(dtype=_DTYPES[o["dtype"]], shape=[int(d) for d in o["shape"]])
            for n, o in outputs.items()
        },
        task=task,
    )


def metadata_from_store_record(
    record: records_pb2.ModelRecord, limits: Limits | None = None
) -> serve_pb2.ModelMetadata:
    """ModelMetadata from a version's record (cookline.json)."""
    return model_metadata(
        record.name,
        record.version,
        list(record.class_names),
        inputs_lib.specs_from_record(record),
        limits or Limits(),
        outputs_of(record),
        record.task,
    )


def explain_failure(predict, specs: dict[str, InputSpec], arrays: dict[str, np.ndarray], exc: Exception) -> Exception:
    """The error of one request the model failed on. The per-row checks ran before, so
    this is rare (an image whose header is fine but whose data is not): the model's
    InvalidArgumentError becomes INVALID_ARGUMENT naming the first row it fails on."""
    if not isinstance(exc, tf.errors.InvalidArgumentError):
        return exc
    rows = len(next(iter(arrays.values())))
    bad = 0
    if rows > 1:
        for row in range(rows):
            try:
                predict({name: value[row : row + 1] for name, value in arrays.items()})
            except tf.errors.InvalidArgumentError:
                bad = row
                break
    names = [s.name for s in specs.values() if s.kind == "image"] or [s.name for s in specs.values() if s.is_string]
    where = f"inputs[{names[0]!r}] row {bad}" if names else f"row {bad}"
    lines = [line.strip() for line in (exc.message or str(exc)).splitlines()]
    detail = next(
        (
            line
            for line in lines
            if line and not line.startswith(("Graph execution error", "Detected at", "<stack", "[["))
        ),
        "invalid value",
    )[:200]
    return invalid(f"{where}: the model could not use this value ({detail})")


def check_batching(batching: serve_pb2.BatchingConfig | None) -> serve_pb2.BatchingConfig:
    """The batching settings with defaults filled in (the compiled path's buckets too);
    INVALID_ARGUMENT naming a bad one."""
    batching = batching or serve_pb2.BatchingConfig()
    allowed = list(batching.allowed_batch_sizes)
    delay = batching.max_queue_delay_ms
    for i, bucket in enumerate(allowed):
        if not 1 <= bucket <= MAX_BATCH_SIZE:
            raise invalid(f"batching.allowed_batch_sizes[{i}]: {bucket} is not in [1, {MAX_BATCH_SIZE}]")
        if i and bucket <= allowed[i - 1]:
            raise invalid(
                f"batching.allowed_batch_sizes[{i}]: {bucket} after {allowed[i - 1]}; "
                "the sizes must be strictly ascending"
            )
    size = batching.max_batch_size or (allowed[-1] if allowed else DEFAULT_MAX_BATCH_SIZE)
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise invalid(f"batching.max_batch_size: {size} is not in [1, {MAX_BATCH_SIZE}]")
    if allowed and allowed[-1] > size:
        raise invalid(
            f"batching.allowed_batch_sizes[{len(allowed) - 1}]: {allowed[-1]} is larger than max_batch_size {size}"
        )
    if not 0 <= delay <= MAX_QUEUE_DELAY_MS:
        raise invalid(f"batching.max_queue_delay_ms: {delay} is not in [0, {MAX_QUEUE_DELAY_MS}]")
    return serve_pb2.BatchingConfig(
        max_batch_size=size, max_queue_delay_ms=delay, allowed_batch_sizes=compiled.buckets_for(size, allowed)
    )


class ModelManager:
    def __init__(self, store: ObjectStore, cache_dir: str, limits: Limits | None = None):
        self.store = store
        self.cache_dir = cache_dir
        self.limits = limits or Limits()
        self.serving: dict[str, LoadedModel] = {}  # name -> the deployed version
        self.loading: dict[str, int] = {}  # name -> version being loaded
        self.expected: set[str] = set()  # names that should be serving (ServerReady)
        self.stats: dict[tuple[str, int], ModelStats] = {}
        self.started = threading.Event()  # start-up loading of deployed models done
        self._lock = threading.Lock()
        # per model: held while it is deployed, dropped, or compared with its deployed record
        # (re-entrant: reconcile holds it across the deploy it decides on)
        self._deploy_locks: dict[str, threading.RLock] = {}
        # per model: the deployed record (updated_at left out) this replica last followed or wrote
        self._followed: dict[str, bytes] = {}
        self._health: health_async.HealthServicer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's event loop, set before it serves

    # --- health and readiness -------------------------------------------------

    def attach_health(self, servicer: health_async.HealthServicer) -> None:
        """Called on the server's loop once it answers: per-model readiness goes to `servicer`."""
        self._health = servicer
        with self._lock:
            for name in self.serving:
                self._set_health(name, True)

    def _set_health(self, name: str, serving: bool) -> None:
        """Per-model health; callable from any thread (the health servicer lives on the loop)."""
        if self._health is not None and self.loop is not None:
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            asyncio.run_coroutine_threadsafe(self._health.set(name, status), self.loop)

    def server_ready(self) -> bool:
        with self._lock:
            return self.started.is_set() and self.expected <= set(self.serving)

    def model_ready(self, name: str, version: int = 0) -> bool:
        with self._lock:
            model = self.serving.get(name)
        return model is not None and version in (0, model.version)

    # --- deploy / unload -------------------------------------------------------

    def resolve(self, name: str, version: int, alias: str) -> tuple[records_pb2.ModelRecord, str]:
        """The record (cookline.json) of the version the policy names, and the policy's name."""
        layout.check_name("model.name", name)
        if alias:
            if version:
                raise invalid(f"model.version: {version} given together with alias {alias!r}; give one")
            version, policy = layout.read_alias(self.store, name, alias), f"alias:{alias}"
        else:
            policy = "version" if version else "latest"
        return layout.read_model_record(self.store, name, version), policy

    def deploy(
        self,
        ref: model_pb2.ModelRef,
        alias: str = "",
        batching: serve_pb2.BatchingConfig | None = None,
        record: bool = True,
    ) -> LoadedModel:
        """Loads and warms the version the policy names, then swaps it in. `record`
        writes the deployed marker (LoadModel does; start-up only reads it)."""
        batching = check_batching(batching)
        meta, policy = self.resolve(ref.name, ref.version, alias)
        name, version = ref.name, meta.version
        with self._deploy_lock(name):
            with self._lock:
                current = self.serving.get(name)
                self.expected.add(name)
            if current is not None and current.version == version and current.batching == batching:
                current.policy = policy
                new = current
            else:
                if current is None:
                    self._set_health(name, False)
                try:
                    new = self._load(meta, batching, policy)
                except BaseException:
                    if current is None:  # nothing of this model serves: not expected to be ready
                        with self._lock:
                            self.expected.discard(name)
                    raise
                with self._lock:
                    self.serving[name] = new
                self._set_health(name, True)
                if current is not None:
                    current.batcher.close()  # answers what it queued before the swap
                    current.batcher.stats.ready = False
                log.info(
                    "model %s version %d deployed (%s, max_batch_size %d, max_queue_delay_ms %d)",
                    name,
                    version,
                    policy,
                    batching.max_batch_size,
                    batching.max_queue_delay_ms,
                )
                settle_heap()
            if record:
                deployed = records_pb2.DeployedRecord(
                    policy=policy.split(":")[0], version=version, alias=alias, batching=batching
                )
                layout.write_deployed(self.store, name, deployed)
                self._followed[name] = _desired(deployed)
            return new

    def _deploy_lock(self, name: str) -> threading.RLock:
        with self._lock:
            return self._deploy_locks.setdefault(name, threading.RLock())

    def unload(self, name: str) -> LoadedModel:
        layout.check_name("name", name)
        with self._deploy_lock(name):
            model = self._drop(name)
            if model is None:
                raise Fail(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not loaded")
            layout.delete_deployed(self.store, name)
        log.info("model %s version %d unloaded", name, model.version)
        return model

    def _drop(self, name: str) -> LoadedModel | None:
        """Stops serving `name` here (its marker untouched); the version dropped, or None."""
        with self._lock:
            model = self.serving.pop(name, None)
            self.expected.discard(name)
            self._followed.pop(name, None)
        if model is None:
            return None
        self._set_health(name, False)
        model.batcher.close()
        model.batcher.stats.ready = False
        settle_heap()
        return model

    def reconcile(self) -> None:
        """Brings this replica to the store's deployed records (every COOKLINE_SERVE_RECONCILE_S):
        a record that changed since this replica last followed or wrote it is deployed here as
        start-up would (a version swap or a deploy made through another replica: a LoadModel sent
        to one address, or a gateway fan-out this replica missed while unreachable), and a model
        served here whose record is gone is dropped (an UnloadModel that reached another replica).
        A record whose deploy fails is tried again only once it changes."""
        if not self.started.is_set():
            return  # start-up is still loading the records
        with self._lock:
            here = set(self.serving) | set(self._followed)
        for name in sorted(set(layout.deployed_models(self.store)) | here):
            with self._deploy_lock(name):
                record = layout.read_deployed(self.store, name)
                if record is None:
                    if (model := self._drop(name)) is not None:
                        log.info("model %s version %d dropped: no longer deployed in the store", name, model.version)
                    continue
                if self._followed.get(name) == _desired(record):
                    continue
                log.info("model %s: its deployed record changed in the store; following it", name)
                try:
                    self._deploy_record(name, record)
                except Exception:  # one broken model must not stop the others
                    log.exception("could not deploy model %s as its deployed record says", name)

    def load_deployed(self) -> None:
        """Start-up: loads every model marked deployed in the store (the desired state)."""
        try:
            names = layout.deployed_models(self.store)
            with self._lock:
                self.expected.update(names)
            for name in names:
                self._set_health(name, False)
            for name in names:
                record = layout.read_deployed(self.store, name)
                if record is None:
                    continue
                try:
                    self._deploy_record(name, record)
                except Exception:  # one broken model must not stop the others
                    log.exception("could not load deployed model %s", name)
                    with self._lock:
                        self.expected.add(name)  # deployed but not serving: the server is not ready
        finally:
            self.started.set()

    def _deploy_record(self, name: str, record: records_pb2.DeployedRecord) -> LoadedModel:
        """Deploys what a deployed record in the store says (its policy and batching), recording nothing
        but that this replica follows that record (tried once, whatever the outcome: reconcile)."""
        self._followed[name] = _desired(record)
        version = int(record.version) if record.policy == "version" else 0
        alias = record.alias if record.policy == "alias" else ""
        return self.deploy(model_pb2.ModelRef(name=name, version=version), alias, record.batching, record=False)

    def _load(self, meta: records_pb2.ModelRecord, batching: serve_pb2.BatchingConfig, policy: str) -> LoadedModel:
        name, version = meta.name, meta.version
        with self._lock:
            self.loading[name] = version
        try:
            prefix = layout.model_prefix(name, version)
            local = os.path.join(self.cache_dir, name, str(version))
            if not os.path.isdir(local):  # download whole, then rename: never a half-copied version
                partial = tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=self.cache_dir)
                try:  # each file is verified against the record's checksums (DATA_LOSS on a mismatch)
                    layout.download_model(self.store, meta, prefix, partial)
                except BaseException:
                    shutil.rmtree(partial, ignore_errors=True)
                    raise
                os.makedirs(os.path.dirname(local), exist_ok=True)
                os.replace(partial, local)
            task = meta.task
            predict = load_predict(local, every_output=task == "detection")
            specs = inputs_lib.specs_from_record(meta)
            if sorted(specs) != predict.input_names:
                raise Fail(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model {name!r} version {version}: cookline.json lists inputs {sorted(specs)}, "
                    f"its SavedModel takes {predict.input_names}",
                )
            # the compiled path when the model compiles (every bucket compiled and checked against the
            # signature here, before the version answers); else the signature, warmed up too
            if predict.every_output:
                fast, why_not = None, "a detector answers several outputs; the compiled path answers scores only"
            else:
                fast, why_not = compiled.compile_model(
                    predict.signature, specs, list(batching.allowed_batch_sizes), predict
                )
            if fast is None:
                png = tf.io.encode_png(tf.zeros([8, 8, 3], tf.uint8)).numpy()
                for rows in sorted({1, batching.max_batch_size}):  # warm-up: trace and allocate before ready
                    predict(inputs_lib.warmup_inputs(specs, rows, png))
                log.info("model %s version %d runs on its signature: %s", name, version, why_not)
            stats = ModelStats(name, version, batching)
            assert self.loop is not None, "models load after the server's loop is set"
            batcher = Batcher(
                f"{name}-{version}",
                fast or predict,
                batching.max_batch_size,
                batching.max_queue_delay_ms,
                stats,
                self.loop,
                explain=lambda arrays, exc: explain_failure(predict, specs, arrays, exc),
            )
            stats.ready = True
            with self._lock:
                self.stats[(name, version)] = stats
            return LoadedModel(
                name,
                version,
                list(meta.class_names),
                specs,
                batching,
                policy,
                batcher,
                self.limits,
                outputs_of(meta),
                task,
                serve_pb2.EXECUTION_PATH_XLA if fast is not None else serve_pb2.EXECUTION_PATH_SIGNATURE,
                why_not,
            )
        finally:
            with self._lock:
                self.loading.pop(name, None)

    # --- predictions ------------------------------------------------------------

    def loaded(self, ref: model_pb2.ModelRef) -> LoadedModel | None:
        """The loaded version answering ref, or None; checks the ref, reads nothing."""
        layout.check_name("model.name", ref.name)
        if ref.version < 0:
            raise invalid(f"model.version: {ref.version} is negative")
        with self._lock:
            model = self.serving.get(ref.name)
        return model if model is not None and ref.version in (0, model.version) else None

    def get(self, ref: model_pb2.ModelRef) -> LoadedModel:
        """The loaded version answering ref: NOT_FOUND if the store has no such model
        or version, UNAVAILABLE if it has but it is not loaded (or still loading).
        Reads the store when ref is not loaded: call it off the event loop.

        A model that this replica never loaded but the store marks deployed is loaded now, by the
        call that asks for it: a LoadModel sent to serve's address reaches one replica (the gateway's
        DeployModel reaches each), and the deployed record it writes is the state every replica
        follows (as each does at start-up)."""
        model = self.loaded(ref)
        if model is not None:
            return model
        with self._lock:
            model = self.serving.get(ref.name)
            loading = self.loading.get(ref.name)
            known = ref.name in self.expected
        layout.read_model_record(self.store, ref.name, ref.version)  # NOT_FOUND when not in the store
        what = f"model {ref.name!r}" + (f" version {ref.version}" if ref.version else "")
        if loading is not None and ref.version in (0, loading):
            raise unavailable(f"{what} is loading, not ready yet")
        if model is None and not known and self.started.is_set():
            record = layout.read_deployed(self.store, ref.name)
            if record is not None:
                log.info("model %s is deployed (by another replica): loading it here", ref.name)
                model = self._deploy_record(ref.name, record)
                if ref.version in (0, model.version):
                    return model
        serving = f" (version {model.version} is deployed)" if model is not None else ""
        raise unavailable(f"{what} is not loaded{serving}; LoadModel deploys it")

    async def submit(
        self, ref: model_pb2.ModelRef, prepare: Callable[[LoadedModel], dict[str, np.ndarray]]
    ) -> tuple[LoadedModel, asyncio.Future]:
        """Queues a request on the version answering ref (on the event loop). `prepare(model)`
        decodes the request's inputs and checks them against that model (LoadedModel.check)."""
        while True:
            model = self.loaded(ref)
            if model is None:  # the precise error reads the store: off the loop
                model = await asyncio.to_thread(self.get, ref)
            future = model.batcher.submit(prepare(model))
            if future is not None:
                return model, future
            # The batcher closed between the look-up and submit (a swap): the next look-up sees the new version.

    def all_stats(self, name: str = "") -> list[serve_pb2.ModelStats]:
        with self._lock:
            keys = sorted(k for k in self.stats if not name or k[0] == name)
            return [self.stats[k].to_proto() for k in keys]


def _desired(record: records_pb2.DeployedRecord) -> bytes:
    """A deployed record as compared by reconcile: without updated_at, which differs between the
    replicas writing the same deploy."""
    copy = records_pb2.DeployedRecord()
    copy.CopyFrom(record)
    copy.ClearField("updated_at")
    return copy.SerializeToString(deterministic=True)

"""The models a serve process answers for: deploy (load, warm up, swap), unload,
look-up for predictions, and start-up from the store's deployed markers.

Per model name one version is deployed: it answers requests with version 0 and
requests naming its version. Deploying another version loads and warms it while
the old one keeps answering, switches new requests over in one step, then
closes the old batcher, which answers what was already queued: no request fails.
"""
from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable

import grpc
import numpy as np
import tensorflow as tf
from grpc_health.v1 import _async as health_async, health_pb2

from cookline import tensors
from cookline.v1 import model_pb2, records_pb2, serve_pb2
from services.common import layout
from services.common.errors import Fail, invalid
from services.common.store import ObjectStore
from services.serve.batcher import Batcher
from services.serve.stats import ModelStats

log = logging.getLogger("cookline.serve")

DEFAULT_MAX_BATCH_SIZE = 256
MAX_BATCH_SIZE = 65536
MAX_QUEUE_DELAY_MS = 10_000


def unavailable(message: str) -> Fail:
    return Fail(grpc.StatusCode.UNAVAILABLE, message)


@dataclass
class LoadedModel:
    """One model version, loaded, warmed up and answering through its batcher."""
    name: str
    version: int
    class_names: list[str]
    feature_columns: list[str]
    num_features: int
    batching: serve_pb2.BatchingConfig
    policy: str
    batcher: Batcher = field(repr=False)
    class_array: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.class_array = np.asarray([c.encode() for c in self.class_names], dtype=object)

    @property
    def ref(self) -> model_pb2.ModelRef:
        return model_pb2.ModelRef(name=self.name, version=self.version)

    def metadata(self) -> serve_pb2.ModelMetadata:
        meta = metadata_from_store_record({"name": self.name, "version": self.version,
                                           "class_names": self.class_names,
                                           "feature_columns": self.feature_columns,
                                           "inputs": {"features": {"shape": [-1, self.num_features]}}})
        meta.batching.CopyFrom(self.batching)
        meta.version_policy = self.policy
        return meta

    def labels(self, scores: np.ndarray) -> np.ndarray:
        """The most probable class name (bytes) of each row."""
        return self.class_array[scores.argmax(axis=1)]


def load_predict(saved_model_dir: str) -> Callable[[np.ndarray], np.ndarray]:
    """The SavedModel's serving_default signature as float32 features -> scores (numpy).
    bench/serving.py times this same function in process, so serve's overhead is
    measured against the very call it makes.

    (Its flat form, the private `_call_flat`, skips the keyword binding: 0.04 ms of a
    0.14 ms one-row call. It sped up the in-process baseline more than serve: the
    streaming ratio fell from 0.67 to 0.54 for 5% more unary requests/s. Not used.)
    """
    loaded = tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures["serving_default"]

    def predict(features: np.ndarray, _loaded=loaded) -> np.ndarray:  # _loaded keeps the variables alive
        return signature(features=tf.constant(features))["scores"].numpy()
    return predict


def metadata_from_store_record(meta: dict) -> serve_pb2.ModelMetadata:
    """ModelMetadata from a version's cookline.json."""
    num_features = int(meta["inputs"]["features"]["shape"][1])
    return serve_pb2.ModelMetadata(
        model=model_pb2.ModelRef(name=meta["name"], version=int(meta["version"])),
        inputs={"features": serve_pb2.TensorSpec(dtype=tensors.DataType.DATA_TYPE_FLOAT32,
                                                 shape=[-1, num_features])},
        class_names=list(meta["class_names"]), feature_columns=list(meta.get("feature_columns", [])))


def check_batching(batching: serve_pb2.BatchingConfig | None) -> serve_pb2.BatchingConfig:
    """The batching settings with defaults filled in; INVALID_ARGUMENT naming a bad one."""
    size = batching.max_batch_size if batching is not None else 0
    delay = batching.max_queue_delay_ms if batching is not None else 0
    size = size or DEFAULT_MAX_BATCH_SIZE
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise invalid(f"batching.max_batch_size: {size} is not in [1, {MAX_BATCH_SIZE}]")
    if not 0 <= delay <= MAX_QUEUE_DELAY_MS:
        raise invalid(f"batching.max_queue_delay_ms: {delay} is not in [0, {MAX_QUEUE_DELAY_MS}]")
    return serve_pb2.BatchingConfig(max_batch_size=size, max_queue_delay_ms=delay)


class ModelManager:
    def __init__(self, store: ObjectStore, cache_dir: str):
        self.store = store
        self.cache_dir = cache_dir
        self.serving: dict[str, LoadedModel] = {}   # name -> the deployed version
        self.loading: dict[str, int] = {}           # name -> version being loaded
        self.expected: set[str] = set()             # names that should be serving (ServerReady)
        self.stats: dict[tuple[str, int], ModelStats] = {}
        self.started = threading.Event()            # start-up loading of deployed models done
        self._lock = threading.Lock()
        self._deploy_locks: dict[str, threading.Lock] = {}
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
        if self._health is not None:
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

    def resolve(self, name: str, version: int, alias: str) -> tuple[dict, str]:
        """cookline.json of the version the policy names, and the policy's name."""
        layout.check_name("model.name", name)
        if alias:
            if version:
                raise invalid(f"model.version: {version} given together with alias {alias!r}; give one")
            version, policy = layout.read_alias(self.store, name, alias), f"alias:{alias}"
        else:
            policy = "version" if version else "latest"
        return layout.read_model_metadata(self.store, name, version), policy

    def deploy(self, ref: model_pb2.ModelRef, alias: str = "", batching: serve_pb2.BatchingConfig | None = None,
               record: bool = True) -> LoadedModel:
        """Loads and warms the version the policy names, then swaps it in. `record`
        writes the deployed marker (LoadModel does; start-up only reads it)."""
        batching = check_batching(batching)
        meta, policy = self.resolve(ref.name, ref.version, alias)
        name, version = ref.name, int(meta["version"])
        with self._lock:
            deploy_lock = self._deploy_locks.setdefault(name, threading.Lock())
        with deploy_lock:
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
                log.info("model %s version %d deployed (%s, max_batch_size %d, max_queue_delay_ms %d)",
                         name, version, policy, batching.max_batch_size, batching.max_queue_delay_ms)
            if record:
                layout.write_deployed(self.store, name, records_pb2.DeployedRecord(
                    policy=policy.split(":")[0], version=version, alias=alias, batching=batching))
            return new

    def unload(self, name: str) -> LoadedModel:
        layout.check_name("name", name)
        with self._lock:
            model = self.serving.pop(name, None)
            self.expected.discard(name)
        if model is None:
            raise Fail(grpc.StatusCode.NOT_FOUND, f"model {name!r} is not loaded")
        self._set_health(name, False)
        model.batcher.close()
        model.batcher.stats.ready = False
        layout.delete_deployed(self.store, name)
        log.info("model %s version %d unloaded", name, model.version)
        return model

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
                    version = int(record.version) if record.policy == "version" else 0
                    alias = record.alias if record.policy == "alias" else ""
                    self.deploy(model_pb2.ModelRef(name=name, version=version), alias, record.batching, record=False)
                except Exception:  # noqa: BLE001 - one broken model must not stop the others
                    log.exception("could not load deployed model %s", name)
                    with self._lock:
                        self.expected.add(name)  # deployed but not serving: the server is not ready
        finally:
            self.started.set()

    def _load(self, meta: dict, batching: serve_pb2.BatchingConfig, policy: str) -> LoadedModel:
        name, version = meta["name"], int(meta["version"])
        with self._lock:
            self.loading[name] = version
        try:
            prefix = layout.model_prefix(name, version)
            local = os.path.join(self.cache_dir, name, str(version))
            if not os.path.isdir(local):  # download whole, then rename: never a half-copied version
                partial = tempfile.mkdtemp(prefix=f"{name}-{version}-", dir=self.cache_dir)
                for key in self.store.list(prefix):
                    self.store.get_file(key, os.path.join(partial, key[len(prefix):]))
                os.makedirs(os.path.dirname(local), exist_ok=True)
                os.replace(partial, local)
            predict = load_predict(local)
            num_features = int(meta["inputs"]["features"]["shape"][1])

            for rows in sorted({1, batching.max_batch_size}):  # warm-up: trace and allocate before ready
                predict(np.zeros((rows, num_features), np.float32))
            stats = ModelStats(name, version, batching)
            batcher = Batcher(f"{name}-{version}", predict, batching.max_batch_size,
                              batching.max_queue_delay_ms, stats, self.loop)
            stats.ready = True
            with self._lock:
                self.stats[(name, version)] = stats
            return LoadedModel(name, version, list(meta["class_names"]), list(meta.get("feature_columns", [])),
                               num_features, batching, policy, batcher)
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
        Reads the store when ref is not loaded: call it off the event loop."""
        model = self.loaded(ref)
        if model is not None:
            return model
        with self._lock:
            model = self.serving.get(ref.name)
            loading = self.loading.get(ref.name)
        layout.read_model_metadata(self.store, ref.name, ref.version)  # NOT_FOUND when not in the store
        what = f"model {ref.name!r}" + (f" version {ref.version}" if ref.version else "")
        if loading is not None and ref.version in (0, loading):
            raise unavailable(f"{what} is loading, not ready yet")
        serving = f" (version {model.version} is deployed)" if model is not None else ""
        raise unavailable(f"{what} is not loaded{serving}; LoadModel deploys it")

    async def submit(self, ref: model_pb2.ModelRef,
                     prepare: Callable[[LoadedModel], np.ndarray]) -> tuple[LoadedModel, asyncio.Future]:
        """Queues a request on the version answering ref (on the event loop). `prepare(model)`
        checks the inputs against that model and returns its features."""
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

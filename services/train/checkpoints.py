"""Per-epoch training checkpoints in the store, so a retried run continues where it stopped.

    runs/<run-id>/checkpoints/epoch-00007.keras   model + optimizer state after epoch 7
    runs/<run-id>/checkpoints/latest.json         {"epoch": 7, "key": ..., "sha256": ...}, written after the file

latest.json is the checkpoint's record: written last, it carries the file's sha256, and resuming
verifies the download against it (DATA_LOSS naming the object: a run never resumes from bad bytes).
A latest.json without "sha256" (written before checksums existed) resumes unverified.

The model is saved synchronously (consistent weights) to a local file and
uploaded on a background thread, so training does not wait for the store.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading

import grpc
import keras

from services.common import layout
from services.common.errors import Fail
from services.common.store import NotFoundError, ObjectStore, sha256_file

log = logging.getLogger("cookline.train")
LATEST = "latest.json"


class Checkpoints:
    def __init__(self, store: ObjectStore, run_id: str):
        self.store = store
        self.prefix = layout.run_prefix(run_id) + "checkpoints/"
        self.tmp = tempfile.mkdtemp(prefix="cookline-ckpt-")
        self.uploads: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.uploader = threading.Thread(target=self._upload_loop, name="checkpoint-upload", daemon=True)
        self.uploader.start()

    def record(self) -> dict | None:
        """The newest checkpoint's record ({"epoch", "key", "sha256", "metrics"}), or None."""
        try:
            return json.loads(self.store.get_bytes(self.prefix + LATEST))
        except NotFoundError:
            return None

    def latest(self) -> tuple[int, keras.Model, dict] | None:
        """(epochs done, model with optimizer state, that epoch's metrics) of the newest checkpoint, or None."""
        info = self.record()
        if info is None:
            return None
        path = self.download(info["key"], info.get("sha256"))
        return int(info["epoch"]), keras.models.load_model(path), info.get("metrics", {})

    def download(self, key: str, sha256: str | None) -> str:
        """A local copy of checkpoint `key`, verified against `sha256` when given (DATA_LOSS naming the
        key when its bytes differ); it stays until close()."""
        if not key.startswith(self.prefix):
            raise Fail(grpc.StatusCode.INVALID_ARGUMENT, f"checkpoint {key!r} is not one of this run's ({self.prefix})")
        path = os.path.join(self.tmp, "resume.keras")
        self.store.get_file(key, path, sha256=sha256 or None)
        return path

    @staticmethod
    def restore(model: keras.Model, path: str) -> None:
        """Loads a downloaded checkpoint's weights and optimizer state into `model`, whose state
        (optimizer included) must be built already: a distributed worker's model, built under its
        strategy, keeps its distributed variables."""
        model.load_weights(path)

    def save(self, model: keras.Model, epoch: int, metrics) -> None:
        """Saves the state after `epoch` epochs; the upload happens in the background."""
        path = os.path.join(self.tmp, f"epoch-{epoch:05d}.keras")
        model.save(path)
        self.uploads.put((epoch, path, {k: float(v) for k, v in (metrics or {}).items()}))

    def _upload_loop(self) -> None:
        previous = None
        while (item := self.uploads.get()) is not None:
            epoch, path, metrics = item
            try:
                key = self.prefix + os.path.basename(path)
                digest = sha256_file(path)
                self.store.put_file(key, path)
                # latest.json moves only once the file it names is complete
                self.store.put_bytes(
                    self.prefix + LATEST,
                    json.dumps({"epoch": epoch, "key": key, "sha256": digest, "metrics": metrics}).encode(),
                )
                if previous:
                    self.store.delete(previous)
                previous = key
            except BaseException as exc:  # a lost checkpoint must not stop training
                self.error = exc
                log.warning("checkpoint of epoch %d not stored: %s", epoch, exc)
            finally:
                os.remove(path)

    def discard(self) -> None:
        """Deletes the run's checkpoints (once its model is published they are not needed)."""
        self.store.delete_prefix(self.prefix)

    def close(self) -> None:
        """Waits for pending uploads and removes the local files."""
        if not self.uploader.is_alive():
            return
        self.uploads.put(None)
        self.uploader.join()
        for name in os.listdir(self.tmp):
            os.remove(os.path.join(self.tmp, name))
        os.rmdir(self.tmp)

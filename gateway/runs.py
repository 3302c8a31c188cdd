"""The run store: each run's record and event log, kept in memory while the
gateway runs and persisted to runs/<run-id>/ in the object store on every change,
so a watcher (or a restarted gateway) can replay a run from any sequence number."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Iterator

from google.protobuf import json_format

from cookline.v1 import gateway_pb2
from services.common import layout
from services.common.errors import invalid, not_found
from services.common.store import NotFoundError, ObjectStore, StoreError

log = logging.getLogger("cookline.gateway")

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
# Seconds between attempts to write the records the store refused (full, denied, unreachable).
FLUSH_INTERVAL_S = 2.0


def _to_json(message) -> str:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)


class _Entry:
    """One run: its record, its events, and a condition watchers wait on."""

    def __init__(self, run: gateway_pb2.Run, events: list[gateway_pb2.RunEvent]):
        self.run = run
        self.events = events
        self.changed = threading.Condition(threading.RLock())  # re-entered by finish()
        self.unsaved: set[bool] = set()  # what the store refused so far: False the record, True the events too


class RunStore:
    def __init__(self, store: ObjectStore):
        self.store = store
        self.entries: dict[str, _Entry] = {}
        self.lock = threading.Lock()
        self.flusher: threading.Thread | None = None

    @staticmethod
    def new_id() -> str:
        """Sortable by time, unique: 20261125-174012-3fa9c1."""
        return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)

    def create(self, run: gateway_pb2.Run) -> None:
        entry = _Entry(run, [])
        self._write(entry, events=True)  # a run the store cannot record is refused (the RPC fails)
        with self.lock:
            self.entries[run.run_id] = entry

    def get(self, run_id: str) -> gateway_pb2.Run:
        entry = self._entry(run_id)
        with entry.changed:
            return gateway_pb2.Run.FromString(entry.run.SerializeToString())

    def update(self, run_id: str, **fields) -> gateway_pb2.Run:
        """Sets fields of the run record (and updated_at) and persists it."""
        entry = self._entry(run_id)
        with entry.changed:
            for key, value in fields.items():
                if hasattr(value, "CopyFrom"):
                    getattr(entry.run, key).CopyFrom(value)
                elif isinstance(value, dict):
                    getattr(entry.run, key).update(value)
                else:
                    setattr(entry.run, key, value)
            entry.run.updated_at = layout.now()
            self._persist(entry, events=False)
            return gateway_pb2.Run.FromString(entry.run.SerializeToString())

    def append(self, run_id: str, **event) -> gateway_pb2.RunEvent:
        """Appends one event (sequence numbers without gaps), persists, wakes watchers."""
        entry = self._entry(run_id)
        with entry.changed:
            record = gateway_pb2.RunEvent(run_id=run_id, sequence=len(entry.events), time=layout.now(), **event)
            entry.events.append(record)
            self._persist(entry, events=True)
            entry.changed.notify_all()
            return record

    def finish(self, run_id: str, **fields) -> gateway_pb2.Run:
        """Sets the final state (and fields) and appends the `finished` event, atomically,
        so a watcher never sees a terminal record without its final event."""
        entry = self._entry(run_id)
        with entry.changed:
            final = self.update(run_id, **fields)
            self.append(run_id, finished=final)
            return final

    def watch(self, run_id: str, from_sequence: int, is_active=lambda: True) -> Iterator[gateway_pb2.RunEvent]:
        """Events from `from_sequence` on: recorded ones, then live ones until the run ends."""
        if from_sequence < 0:
            raise invalid(f"from_sequence: {from_sequence} is negative")
        entry = self._entry(run_id)
        position = from_sequence
        while True:
            with entry.changed:
                while position >= len(entry.events) and not self._ended(entry) and is_active():
                    entry.changed.wait(timeout=1.0)  # wake now and then to notice a gone watcher
                pending = entry.events[position:]
                ended = self._ended(entry)
            yield from pending
            position += len(pending)
            if (ended and position >= len(entry.events)) or not is_active():
                return

    def unfinished(self) -> list[gateway_pb2.Run]:
        """Runs recorded in the store as QUEUED or RUNNING (a previous gateway died running them).

        A run whose record is final but whose `finished` event was lost (the gateway died
        between the two writes) gets that event now, so its watchers end.
        """
        found = []
        for run_id in self.store.list_dirs("runs/"):
            try:
                entry = self._entry(run_id)
            except Exception:  # not a run folder, or a record being written
                continue
            with entry.changed:
                if entry.run.state in (gateway_pb2.RUN_STATE_QUEUED, gateway_pb2.RUN_STATE_RUNNING):
                    found.append(gateway_pb2.Run.FromString(entry.run.SerializeToString()))
                elif not self._ended(entry):
                    self.append(run_id, finished=entry.run)
        return found

    @staticmethod
    def _ended(entry: _Entry) -> bool:
        """The run's final event is recorded: nothing more will come."""
        return bool(entry.events) and entry.events[-1].WhichOneof("event") == "finished"

    def list(self, limit: int) -> list[gateway_pb2.Run]:
        """Runs newest first: those in memory and those recorded in the store."""
        ids = set(self.store.list_dirs("runs/"))
        with self.lock:
            ids |= set(self.entries)
        runs = []
        for run_id in sorted(ids, reverse=True)[:limit]:
            try:
                runs.append(self.get(run_id))
            except Exception:  # a run being written right now
                continue
        return runs

    def _entry(self, run_id: str) -> _Entry:
        with self.lock:
            entry = self.entries.get(run_id)
        if entry is not None:
            return entry
        if not run_id or "/" in run_id or ".." in run_id:
            raise invalid(f"run_id: {run_id!r} is not a run id")
        prefix = layout.run_prefix(run_id)
        try:
            run = json_format.Parse(self.store.get_bytes(prefix + RUN_FILE), gateway_pb2.Run())
        except NotFoundError:
            raise not_found(f"run {run_id!r} not found") from None
        try:
            lines = self.store.get_bytes(prefix + EVENTS_FILE).decode().splitlines()
        except NotFoundError:
            lines = []
        events = [json_format.Parse(line, gateway_pb2.RunEvent()) for line in lines if line.strip()]
        with self.lock:
            return self.entries.setdefault(run_id, _Entry(run, events))

    def _persist(self, entry: _Entry, events: bool) -> None:
        """Writes the record (and the events) to the store. When the store refuses (full disk, write
        permission revoked, unreachable past its retries) the run goes on in memory, so it still ends and
        its watchers see it end: a background thread writes it again every FLUSH_INTERVAL_S until the
        store takes it."""
        entry.unsaved.add(events)
        try:
            self._write(entry, events=True in entry.unsaved)
        except StoreError as exc:
            log.warning("run %s: record not stored yet (%s); kept in memory, retrying", entry.run.run_id, exc)
            self._start_flusher()
            return
        entry.unsaved.clear()

    def _write(self, entry: _Entry, events: bool) -> None:
        prefix = layout.run_prefix(entry.run.run_id)
        if events:
            self.store.put_bytes(prefix + EVENTS_FILE, "".join(_to_json(e) + "\n" for e in entry.events).encode())
        self.store.put_bytes(prefix + RUN_FILE, json.dumps(json.loads(_to_json(entry.run)), indent=1).encode())

    def _start_flusher(self) -> None:
        with self.lock:
            if self.flusher is None:
                self.flusher = threading.Thread(target=self._flush_loop, name="run-records", daemon=True)
                self.flusher.start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)  # the interval between attempts
            with self.lock:
                pending = [entry for entry in self.entries.values() if entry.unsaved]
            for entry in pending:
                with entry.changed:
                    if not entry.unsaved:
                        continue
                    try:
                        self._write(entry, events=True in entry.unsaved)
                    except StoreError:
                        continue
                    entry.unsaved.clear()
                    log.info("run %s: record stored", entry.run.run_id)

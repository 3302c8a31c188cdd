"""Chaos soak: the stack on SeaweedFS under random SIGKILLs, while runs and predictions go on.

For --minutes M, all at once:
- four pipelines run in a loop, each started again as soon as its last run ended: the tabular iris
  and fruit examples, the digits image folder and the text CSV (examples/, fewer epochs);
- a client streams predictions to serve without pause (one row per message, --rate per second), on the
  iris model the first run deployed. A message that fails UNAVAILABLE (serve restarting, the model
  still loading) or whose stream breaks is sent again; it counts as failed only when it has no answer
  --retry-window seconds after it was first sent, or when it fails with another status;
- a chaos loop SIGKILLs a random service or the S3 server every 10 to 40 s and starts it again at
  once, as a supervisor (compose, Kubernetes) would.

Then the chaos stops, the runs in flight finish, and the store is audited. It prints the runs
(started, succeeded, failed with each reason, still running), the datasets and models in the store
against those the runs recorded, orphaned objects (after collect's sweep of unfinished ingests and
train's of unfinished publishes), the predictions, and the sha256 of every stored shard and model
file against its record; it exits 1 when a target is missed:

- every run ends SUCCEEDED, or failed and a later run of the same pipeline succeeded;
- no run still running once the soak drained;
- 0 datasets or models lost (recorded by a run, not in the store) or duplicated (one pipeline's data
  published as two dataset versions; one run's model published as two versions; a published model no
  run recorded);
- 0 orphaned objects: objects of an unpublished dataset or model version, objects of a published one
  that its record does not list, checkpoints of finished runs. A model version folder holding only
  its claim.json (the publish died after claiming the number, before its first file) is a skipped
  version number, printed apart: the claim is what keeps the number from being reused;
- every object with a recorded checksum matches it;
- 0 predictions failed (every one answered within the retry window).

    .venv/bin/python bench/soak.py --minutes 20 [--seed S] [--json out.json]

docs/benchmarks.md ("Chaos soak") has a 20-minute printout; tests/e2e/test_soak.py runs 3 minutes.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "support"))
# The soak starts servers from the main thread while gRPC calls run on others (see tests/conftest.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc  # noqa: E402 - after the fork-support setting
import numpy as np  # noqa: E402

from cookline import channels, tensors  # noqa: E402
from cookline import spec as pipeline_spec  # noqa: E402
from cookline.client import Client  # noqa: E402
from cookline.stack import Stack  # noqa: E402
from cookline.v1 import gateway_pb2, model_pb2, pipeline_pb2, serve_pb2, serve_pb2_grpc  # noqa: E402
from helpers import EXAMPLES, iris_rows, stack_env, unique_bucket  # noqa: E402
from s3server import SeaweedS3  # noqa: E402
from services.common import layout  # noqa: E402
from services.common.store import NotFoundError, store_from_env  # noqa: E402

# The pipelines that loop: (example file, epochs in the soak).
PIPELINES = {
    "iris": ("iris.yaml", 30),
    "fruit": ("fruit.yaml", 30),
    "digits": ("digits.yaml", 8),
    "text": ("text.yaml", 12),
}
PREDICTED = "iris"  # the model the prediction client streams to
TARGETS = ("gateway", "collect", "process", "train", "serve", "s3")
DONE = (gateway_pb2.RUN_STATE_SUCCEEDED, gateway_pb2.RUN_STATE_FAILED, gateway_pb2.RUN_STATE_CANCELLED)


def soak_name(pipeline: str) -> str:
    return f"soak-{pipeline}"


def pipeline_spec_of(pipeline: str) -> pipeline_pb2.PipelineSpec:
    """The example's pipeline under the soak's name, with the soak's epochs and an absolute source."""
    file_name, epochs = PIPELINES[pipeline]
    with open(os.path.join(EXAMPLES, file_name)) as f:
        text = f.read()
    # examples name their data relative to examples/ (or, iris.yaml, to the checkout)
    spec = pipeline_spec.parse(text, EXAMPLES)
    if not os.path.exists(spec.collect.source):
        spec = pipeline_spec.parse(text, ROOT)
    spec.name = soak_name(pipeline)
    spec.train.epochs = epochs
    if spec.train.HasField("early_stopping"):
        spec.train.ClearField("early_stopping")
    return spec


def retrying(call, window: float, stop_on=()):
    """call() again while it fails UNAVAILABLE (a service restarting), for up to `window` seconds."""
    deadline = time.monotonic() + window
    while True:
        try:
            return call()
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() >= deadline:
                raise
        time.sleep(1.0)  # back-off between attempts while the service restarts


class PipelineLoop(threading.Thread):
    """Submits one pipeline again and again until the deadline, watching each run to its end."""

    def __init__(self, env, pipeline: str, deadline: float, window: float, first_done: threading.Event | None):
        super().__init__(name=f"loop-{pipeline}", daemon=True)
        self.env, self.pipeline, self.deadline, self.window = env, pipeline, deadline, window
        self.first_done = first_done
        self.runs: list[gateway_pb2.Run] = []  # final records, in order
        self.errors: list[str] = []  # client-side failures (submit or watch gave up)

    def run(self) -> None:
        spec = pipeline_spec_of(self.pipeline)
        with Client(env=self.env) as client:
            while time.monotonic() < self.deadline:
                try:
                    run = retrying(lambda: client.submit_spec(spec), self.window)
                    for _ in client.watch(run.run_id, retries=20, reconnect_timeout=self.window):
                        pass
                    self.runs.append(retrying(lambda run=run: client.get_run(run.run_id), self.window))
                except grpc.RpcError as exc:
                    self.errors.append(f"{self.pipeline}: {exc.code().name}: {exc.details()}")
                    time.sleep(1.0)  # back-off before the next submit
                if self.first_done is not None and self.runs and self.runs[-1].state == gateway_pb2.RUN_STATE_SUCCEEDED:
                    self.first_done.set()


class Predictions(threading.Thread):
    """One PredictStream after another to serve, one row per message, at `rate` messages per second."""

    def __init__(self, env, model: str, window: float, rate: float):
        super().__init__(name="predictions", daemon=True)
        self.env, self.model, self.window, self.interval = env, model, window, 1.0 / rate
        self.rows = iris_rows()[0]
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.pending: dict[int, float] = {}  # correlation id -> when first sent (monotonic)
        self.resend: collections.deque[int] = collections.deque()
        self.sent = self.answered = self.answered_after_retry = self.streams = 0
        self.retried: set[int] = set()
        self.failed: list[str] = []
        self.slowest = 0.0  # seconds from first send to answer, the worst

    def request(self, cid: int) -> serve_pb2.PredictStreamRequest:
        message = serve_pb2.PredictStreamRequest(correlation_id=str(cid))
        message.request.model.CopyFrom(model_pb2.ModelRef(name=self.model))
        tensors.from_numpy(
            np.asarray([self.rows[cid % len(self.rows)]], "float32"), out=message.request.inputs["features"]
        )
        return message

    def _expire(self, now: float) -> None:
        for cid, first in list(self.pending.items()):
            if now - first > self.window:
                del self.pending[cid]
                self.failed.append(f"prediction {cid}: no answer within {self.window:.0f} s")

    def run(self) -> None:
        channel = channels.channel("serve", self.env)
        stub = serve_pb2_grpc.ServeServiceStub(channel)
        while not self.stop.is_set():
            broken = threading.Event()

            def messages(broken=broken):
                next_at = time.monotonic()
                while not self.stop.is_set() and not broken.is_set():
                    time.sleep(max(0.0, next_at - time.monotonic()))  # the message rate
                    next_at = max(next_at + self.interval, time.monotonic() - 1.0)
                    with self.lock:
                        if broken.is_set():  # a new stream has taken over what this one left
                            return
                        self._expire(time.monotonic())
                        if self.resend:
                            cid = self.resend.popleft()
                            if cid not in self.pending:
                                continue
                            self.retried.add(cid)
                        else:
                            cid = self.sent
                            self.sent += 1
                            self.pending[cid] = time.monotonic()
                    yield self.request(cid)

            self.streams += 1
            try:
                for response in stub.PredictStream(messages()):
                    self._answer(response)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    with self.lock:
                        self.failed.append(f"stream ended {exc.code().name}: {exc.details()}")
            finally:
                broken.set()
            with self.lock:  # what the broken stream left unanswered goes out again on the next one
                self.resend = collections.deque(sorted(self.pending))
            while not self.stop.is_set():  # serve is restarting: wait until it accepts connections again
                try:
                    grpc.channel_ready_future(channel).result(timeout=1.0)
                    break
                except grpc.FutureTimeoutError:
                    with self.lock:
                        self._expire(time.monotonic())
        channel.close()

    def _answer(self, response: serve_pb2.PredictStreamResponse) -> None:
        cid, now = int(response.correlation_id), time.monotonic()
        with self.lock:
            first = self.pending.get(cid)
            if first is None:  # answered on an earlier stream already, or expired
                return
            if response.HasField("error"):
                if response.error.code == grpc.StatusCode.UNAVAILABLE.value[0]:
                    self.resend.append(cid)  # the model is loading: again later
                    return
                del self.pending[cid]
                code = next((c.name for c in grpc.StatusCode if c.value[0] == response.error.code), response.error.code)
                self.failed.append(f"prediction {cid}: {code}: {response.error.message}")
                return
            del self.pending[cid]
            self.answered += 1
            self.answered_after_retry += cid in self.retried
            self.slowest = max(self.slowest, now - first)

    def finish(self) -> None:
        """Stops sending; what is still unanswered gets the retry window to be answered."""
        deadline = time.monotonic() + self.window
        with self.lock:
            last = self.sent
        while time.monotonic() < deadline:
            with self.lock:
                if not any(cid < last for cid in self.pending):
                    break
            time.sleep(0.2)  # poll the answers still due
        self.stop.set()
        self.join(timeout=self.window + 30)
        with self.lock:
            for cid in sorted(self.pending):
                self.failed.append(f"prediction {cid}: unanswered when the soak ended")
            self.pending.clear()


class Chaos:
    """SIGKILLs a random target every 10-40 s and starts it again at once. Runs on the main thread: the S3
    server is started by the thread that outlives it (its parent-death signal follows the thread)."""

    def __init__(self, stack: Stack, s3: SeaweedS3, rng: random.Random):
        self.stack, self.s3, self.rng = stack, s3, rng
        self.kills: collections.Counter[str] = collections.Counter()
        self.log: list[str] = []

    def kill(self, target: str) -> None:
        started = time.monotonic()
        if target == "s3":
            self.s3.kill()
            self.s3.start()  # waits until S3 answers again
        else:
            self.stack.stop(target, signal.SIGKILL)
            self.stack.start(target)
        self.kills[target] += 1
        self.log.append(
            f"{time.strftime('%H:%M:%S')} SIGKILL {target} (restarted in {time.monotonic() - started:.1f} s)"
        )

    def run_until(self, deadline: float, min_s: float = 10.0, max_s: float = 40.0) -> None:
        while True:
            pause = self.rng.uniform(min_s, max_s)
            if time.monotonic() + pause >= deadline:
                time.sleep(max(0.0, deadline - time.monotonic()))
                return
            time.sleep(pause)  # the chaos schedule itself
            self.kill(self.rng.choice(TARGETS))


def audit(store, runs: list[gateway_pb2.Run]) -> dict:
    """The store against the runs' records: datasets, models, orphans, checksums."""
    report: dict = {
        "datasets": {},
        "models": {},
        "orphans": [],
        "skipped_versions": [],
        "checksums_checked": 0,
        "checksum_failures": [],
    }

    def check(key: str, expected: str) -> None:
        try:
            digest = hashlib.sha256(store.get_bytes(key)).hexdigest()
        except NotFoundError:
            report["checksum_failures"].append(f"{key}: missing")
            return
        report["checksums_checked"] += 1
        if digest != expected:
            report["checksum_failures"].append(f"{key}: sha256 {digest}, recorded {expected}")

    keys = list(store.list(""))
    by_folder: dict[str, list[str]] = collections.defaultdict(list)
    for key in keys:
        parts = key.split("/")
        if parts[0] == "models" and len(parts) >= 4 and parts[2] == "aliases":
            continue  # serving state beside the versions (layout.alias_key)
        if parts[0] in ("datasets", "models") and len(parts) >= 4:
            by_folder["/".join(parts[:3]) + "/"].append(key)
        elif parts[0] == "runs" and len(parts) >= 3:
            by_folder["/".join(parts[:2]) + "/"].append(key)
        elif parts[0] == "models" and len(parts) == 3 and parts[2] == layout.DEPLOYED:
            continue
        else:
            report["orphans"].append(key)
    finished = {run.run_id for run in runs if run.state in DONE}
    for prefix, objects in sorted(by_folder.items()):
        kind, name = prefix.split("/")[0], prefix.split("/")[1]
        if kind == "runs":
            if name in finished:
                report["orphans"] += [k for k in objects if k[len(prefix) :] not in ("run.json", "events.jsonl")]
            continue
        record_name = layout.DATASET_MANIFEST if kind == "datasets" else layout.MODEL_METADATA
        if prefix + record_name not in objects:
            if kind == "models" and objects == [prefix + layout.MODEL_CLAIM]:
                # a publish that died after claiming its number and before its first file: the claim
                # alone stays, so the number is never reused (records.proto, ModelClaim)
                report["skipped_versions"].append(prefix)
            else:
                report["orphans"] += objects  # an unpublished version: nothing may reference it
            continue
        record = json.loads(store.get_bytes(prefix + record_name))
        if kind == "datasets":
            listed = {shard["key"]: shard.get("sha256") for shard in record["shards"]}
            report["datasets"].setdefault(name, []).append(prefix.split("/")[2])
        else:
            listed = dict(record.get(layout.CHECKSUMS) or {})
            report["models"].setdefault(name, []).append((int(prefix.split("/")[2]), record.get("run_id", "")))
        for key in objects:
            rest = key[len(prefix) :]
            if rest == record_name or (kind == "models" and rest == layout.MODEL_CLAIM):
                continue  # the record itself; a published version's claim is part of the version
            if rest not in listed:
                report["orphans"].append(key)
        for rest, sha256 in listed.items():
            if sha256:
                check(prefix + rest, sha256)
            else:
                report["checksum_failures"].append(f"{prefix + rest}: no checksum recorded")
    return report


def judge(loops: list[PipelineLoop], runs: list[gateway_pb2.Run], found: dict, predictions: Predictions) -> list:
    """Each target: (what, measured, met)."""
    failed = [r for r in runs if r.state == gateway_pb2.RUN_STATE_FAILED]
    unretried = []
    for run in failed:  # retried to success: a later run of the same pipeline succeeded
        later = [
            r
            for r in runs
            if r.pipeline.name == run.pipeline.name
            and r.created_at > run.created_at
            and r.state == gateway_pb2.RUN_STATE_SUCCEEDED
        ]
        if not later:
            unretried.append(run.run_id)
    running = [r for r in runs if r.state not in DONE]
    recorded_datasets = {(r.dataset.name, r.dataset.version) for r in runs if r.dataset.name}
    stored_datasets = {(n, v) for n, versions in found["datasets"].items() for v in versions}
    recorded_models = {(r.model.name, r.model.version): r.run_id for r in runs if r.model.name}
    stored_models = {(n, v): run_id for n, versions in found["models"].items() for v, run_id in versions}
    lost = sorted(recorded_datasets - stored_datasets) + sorted(set(recorded_models) - set(stored_models))
    duplicated = [f"dataset {n}: {len(v)} versions {v}" for n, v in found["datasets"].items() if len(v) > 1]
    per_run = collections.Counter(run_id for run_id in stored_models.values())
    duplicated += [f"run {run_id}: {count} model versions" for run_id, count in per_run.items() if count > 1]
    duplicated += [
        f"model {n} version {v} (run {run_id}): no run recorded it"
        for (n, v), run_id in stored_models.items()
        if (n, v) not in recorded_models
    ]
    return (
        [
            (
                "every run SUCCEEDED or retried to success",
                f"{len(failed)} failed, {len(unretried)} not retried to success",
                not unretried,
            ),
            ("no run still running after the drain", f"{len(running)} running", not running),
            (
                "no client-side run loop gave up",
                f"{sum(len(loop.errors) for loop in loops)} gave up",
                not any(loop.errors for loop in loops),
            ),
            ("0 datasets or models lost", f"{len(lost)} lost", not lost),
            ("0 datasets or models duplicated", f"{len(duplicated)} duplicated", not duplicated),
            ("0 orphaned objects", f"{len(found['orphans'])} orphaned", not found["orphans"]),
            (
                "every checksum matches",
                f"{found['checksums_checked']} checked, {len(found['checksum_failures'])} bad",
                not found["checksum_failures"],
            ),
            (
                "every prediction answered within the retry window",
                f"{len(predictions.failed)} failed",
                not predictions.failed,
            ),
        ],
        lost,
        duplicated,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="how long the chaos lasts")
    parser.add_argument("--seed", type=int, default=None, help="seed of the chaos schedule (default: random)")
    parser.add_argument(
        "--retry-window",
        type=float,
        default=120.0,
        help="seconds a prediction (or a client call) is retried on UNAVAILABLE before it counts as failed",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="prediction messages per second")
    parser.add_argument("--drain", type=float, default=900.0, help="most seconds the runs in flight get to finish")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the logs and the store's folder")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack and the S3 server on the way out
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)

    folder = tempfile.mkdtemp(prefix="cookline-soak-")
    s3 = SeaweedS3().start()
    env = stack_env(os.environ, s3.env(unique_bucket("soak")), s3.ports.values())
    env.update(COOKLINE_SOURCE_ROOTS=EXAMPLES)
    stack = Stack(env, log_dir=os.path.join(folder, "logs"))
    print(f"chaos soak: {args.minutes:g} min, seed {seed}, logs in {folder}/logs, {os.cpu_count()} CPUs", flush=True)
    try:
        stack.start_all()
        stack.wait_healthy(timeout=300)
        first = threading.Event()
        started = time.monotonic()
        deadline = started + args.minutes * 60
        loops = [
            PipelineLoop(env, name, deadline, args.retry_window, first if name == PREDICTED else None)
            for name in PIPELINES
        ]
        for loop in loops:
            loop.start()
        first.wait(timeout=args.drain)  # the predicted model is deployed: predictions and chaos begin
        predictions = Predictions(env, soak_name(PREDICTED), args.retry_window, args.rate)
        predictions.start()
        chaos = Chaos(stack, s3, rng)
        chaos.run_until(deadline)
        chaos_s = time.monotonic() - started
        print(f"chaos over after {chaos_s / 60:.1f} min: draining the runs in flight", flush=True)
        for loop in loops:
            loop.join(timeout=max(1.0, deadline + args.drain - time.monotonic()))
        predictions.finish()
        with Client(env=env) as client:
            runs = retrying(lambda: client.list_runs(1000), args.retry_window)
        store = store_from_env(env)
        found = audit(store, runs)
        targets, lost, duplicated = judge(loops, runs, found, predictions)
        exited = stack.exited()
    finally:
        stack.stop_all()
        s3.stop()

    states = collections.Counter(gateway_pb2.RunState.Name(r.state).removeprefix("RUN_STATE_") for r in runs)
    print(
        f"\nchaos: {sum(chaos.kills.values())} SIGKILLs in {chaos_s / 60:.1f} min: "
        + ", ".join(f"{t} {chaos.kills[t]}" for t in TARGETS)
    )
    print(
        f"runs: {len(runs)} started, {states['SUCCEEDED']} succeeded, {states['FAILED']} failed, "
        f"{len(runs) - sum(states[s] for s in ('SUCCEEDED', 'FAILED', 'CANCELLED'))} still running"
    )
    for name in PIPELINES:
        mine = [r for r in runs if r.pipeline.name == soak_name(name)]
        ok = sum(r.state == gateway_pb2.RUN_STATE_SUCCEEDED for r in mine)
        print(f"  {soak_name(name):12s} {len(mine):3d} runs, {ok:3d} succeeded")
    for run in runs:
        if run.state == gateway_pb2.RUN_STATE_FAILED:
            print(f"  FAILED {run.run_id} {run.pipeline.name}: {run.reason}")
    for loop in loops:
        for error in loop.errors:
            print(f"  client gave up: {error}")
    datasets = sum(len(v) for v in found["datasets"].values())
    models = sum(len(v) for v in found["models"].values())
    print(
        f"store: {datasets} dataset versions, {models} model versions; runs recorded "
        f"{len({(r.dataset.name, r.dataset.version) for r in runs if r.dataset.name})} datasets, "
        f"{len({(r.model.name, r.model.version) for r in runs if r.model.name})} models; "
        f"{len(lost)} lost, {len(duplicated)} duplicated, {len(found['orphans'])} orphaned objects"
    )
    for item in lost:
        print(f"  lost: {item}")
    for item in duplicated:
        print(f"  duplicated: {item}")
    for key in found["orphans"][:20]:
        print(f"  orphaned: {key}")
    if found["skipped_versions"]:
        print(
            f"  {len(found['skipped_versions'])} model version numbers skipped (a claim alone: the publish died "
            f"before its first file): {', '.join(found['skipped_versions'][:10])}"
        )
    print(f"checksums: {found['checksums_checked']} objects verified, {len(found['checksum_failures'])} bad")
    for item in found["checksum_failures"][:20]:
        print(f"  bad: {item}")
    print(
        f"predictions: {predictions.sent} sent, {predictions.answered} answered "
        f"({predictions.answered_after_retry} after a retry, slowest {predictions.slowest:.1f} s), "
        f"{len(predictions.failed)} failed (retry window {args.retry_window:g} s), {predictions.streams} streams"
    )
    for item in predictions.failed[:20]:
        print(f"  failed: {item}")
    if exited:
        print(f"services that had exited at the end: {exited}")
    print("\n| target | measured | met |\n|---|---|---|")
    for what, measured, met in targets:
        print(f"| {what} | {measured} | {'yes' if met else 'NO'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "seed": seed,
                    "kills": dict(chaos.kills),
                    "runs": {"started": len(runs), **states},
                    "failed": [
                        f"{r.run_id} {r.pipeline.name}: {r.reason}"
                        for r in runs
                        if r.state == gateway_pb2.RUN_STATE_FAILED
                    ],
                    "predictions": {
                        "sent": predictions.sent,
                        "answered": predictions.answered,
                        "failed": predictions.failed,
                    },
                    "orphans": found["orphans"],
                    "skipped_versions": found["skipped_versions"],
                    "lost": [str(x) for x in lost],
                    "duplicated": duplicated,
                    "checksums": {"checked": found["checksums_checked"], "bad": found["checksum_failures"]},
                    "targets": {what: met for what, _, met in targets},
                },
                f,
                indent=1,
            )
    met = all(ok for _, _, ok in targets)
    if met and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    elif not met:
        print(f"logs kept in {folder}/logs")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())

"""The run executor: runs a pipeline's stages (collect -> train, which pulls through process ->
serve) in a thread per run, recording every event, retrying a stage whose service died, and
resuming the runs a previous gateway left unfinished. The RPC layer is gateway/service.py."""

from __future__ import annotations

import logging
import os
import threading

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cookline import channels, config, settings
from cookline import spec as pipeline_spec
from cookline.spec import plugins as spec_plugins
from cookline.v1 import (
    collect_pb2,
    collect_pb2_grpc,
    data_pb2,
    gateway_pb2,
    model_pb2,
    plugins_pb2,
    plugins_pb2_grpc,
    registry_pb2,
    train_pb2,
    train_pb2_grpc,
)
from gateway import replicas
from gateway.runs import RunStore
from services.common.errors import Fail, status_of

log = logging.getLogger("cookline.gateway")

# The service each stage calls.
STAGE_SERVICES = {
    gateway_pb2.STAGE_COLLECT: "collect",
    gateway_pb2.STAGE_TRAIN: "train",
    gateway_pb2.STAGE_SERVE: "serve",
}


def stage_name(stage: int) -> str:
    return gateway_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()


def stage_retries() -> int:
    """COOKLINE_STAGE_RETRIES: extra attempts of a stage (collect, train, serve) whose service died
    or lost the object store (UNAVAILABLE). Default 3."""
    return int(os.environ.get("COOKLINE_STAGE_RETRIES") or settings.default("COOKLINE_STAGE_RETRIES"))


class _StageFailed(Exception):
    def __init__(self, stage: int, exc: BaseException):
        code, message = status_of(exc)
        super().__init__(f"{stage_name(stage)} failed: {code.name}: {message}")


class _Cancelled(Exception):
    """The run was cancelled by CancelRun."""


class _Active:
    """A run being executed: its id, its cancel flag and the stage call in flight."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.cancelled = threading.Event()
        self.call = None
        self.lock = threading.Lock()

    def track(self, call):
        """Registers the in-flight call (cancelled at once if the run already was)."""
        with self.lock:
            self.call = call
            if self.cancelled.is_set():
                call.cancel()
        return call

    def cancel(self) -> None:
        with self.lock:
            self.cancelled.set()
            if self.call is not None:
                self.call.cancel()


class RunExecutor:
    """Runs pipelines: one thread per run, the stages in order, every event recorded in `runs`."""

    def __init__(self, runs: RunStore):
        self.runs = runs
        # one channel per stage service: its calls, and the health check that a retry waits on
        self.stage_channels = {service: channels.channel(service) for service in ("collect", "train")}
        self.collect = collect_pb2_grpc.CollectServiceStub(self.stage_channels["collect"])
        self.train = train_pb2_grpc.TrainServiceStub(self.stage_channels["train"])
        # Asked which plugins they loaded, for pipelines that use plugins (collect, process, train run them).
        self.plugin_stubs = {
            service: plugins_pb2_grpc.PluginServiceStub(channels.channel(service))
            for service in ("collect", "process", "train")
        }
        self.active: dict[str, _Active] = {}
        self.active_lock = threading.Lock()

    def check_plugins(self, spec) -> None:
        """FAILED_PRECONDITION naming the service when a plugin the pipeline uses is not loaded there
        (asked of each service that runs it, by ListPlugins). Nothing is asked for a pipeline of built-ins."""
        loaded: dict[str, set[tuple[str, str]]] = {}
        for kind, name, services in spec_plugins.used_by(spec):
            for service in services:
                if service not in loaded:
                    found = self.plugin_stubs[service].ListPlugins(plugins_pb2.ListPluginsRequest(), timeout=30).plugins
                    loaded[service] = {(p.kind, p.name) for p in found if not p.error}
                if (kind, name) not in loaded[service]:
                    raise Fail(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"the {service} service lacks the {kind} plugin {name!r} this pipeline uses; "
                        f"install its package where {service} runs (cookline health --verbose lists "
                        "each service's plugins)",
                    )

    def start(self, run: gateway_pb2.Run, resumed: bool = False) -> None:
        """Runs `run` (already recorded) in a thread of its own; `resumed`: a previous gateway left it
        unfinished, and it continues from the stage it was in."""
        with self.active_lock:
            self.active[run.run_id] = _Active(run.run_id)
        threading.Thread(
            target=self._execute,
            args=(run.run_id, run.pipeline, run if resumed else None),
            name=f"run-{run.run_id}",
            daemon=True,
        ).start()

    def cancel(self, run_id: str) -> bool:
        """Cancels a run being executed here; False when none is."""
        with self.active_lock:
            active = self.active.get(run_id)
        if active is None:
            return False
        log.info("run %s: cancel requested", run_id)
        active.cancel()
        return True

    def recover(self) -> None:
        """Resumes the runs a previous gateway left QUEUED or RUNNING (it died during them).

        Each continues from the stage it was in: collect is repeated (its versions are
        content-addressed, so a published one is reused), train continues from the run's last
        checkpoint, and a run that had its model goes straight to serve. Watchers see a stage
        event "gateway restarted during <stage>; resuming", then the run's events as before.
        """
        try:
            runs = self.runs.unfinished()
        except Exception:  # the store is down: the runs stay as they are until the next start
            log.exception("cannot look for runs left unfinished by a previous gateway")
            return
        for run in runs:
            stage = stage_name(run.stage) if run.stage else "queued"
            log.info("run %s: gateway restarted during %s; resuming", run.run_id, stage)
            self.runs.append(
                run.run_id,
                stage=gateway_pb2.StageEvent(
                    stage=run.stage, finished=False, message=f"gateway restarted during {stage}; resuming"
                ),
            )
            self.start(run, resumed=True)

    # --- the run itself ------------------------------------------------------

    def _stage(self, run_id: str, stage: gateway_pb2.Stage, finished: bool, message: str = "") -> None:
        if not finished:
            self.runs.update(run_id, stage=stage, state=gateway_pb2.RUN_STATE_RUNNING)
        self.runs.append(run_id, stage=gateway_pb2.StageEvent(stage=stage, finished=finished, message=message))

    def _execute(self, run_id: str, spec, resumed: gateway_pb2.Run | None = None) -> None:
        """Runs the stages; `resumed` is the record of a run a previous gateway left unfinished."""
        active = self.active[run_id]
        try:
            if resumed is not None and resumed.stage == gateway_pb2.STAGE_SERVE and resumed.HasField("model"):
                model, metrics = resumed.model, dict(resumed.metrics)
                deploy = resumed.deploy_decision.startswith("deployed")
            else:
                if resumed is not None and resumed.stage == gateway_pb2.STAGE_TRAIN and resumed.HasField("dataset"):
                    dataset = resumed.dataset
                else:
                    dataset = self._collect(run_id, spec, active)
                model, metrics, evaluation = self._train(run_id, spec, dataset, active)
                deploy, decision = self._gate(spec, evaluation)
                self.runs.update(run_id, deploy_decision=decision)
            if deploy:
                self._serve(run_id, model, active)
            final = self.runs.finish(run_id, state=gateway_pb2.RUN_STATE_SUCCEEDED, metrics=metrics, deployed=deploy)
        except _Cancelled:
            stage = stage_name(self.runs.get(run_id).stage)
            final = self.runs.finish(run_id, state=gateway_pb2.RUN_STATE_CANCELLED, reason=f"cancelled during {stage}")
        except _StageFailed as exc:
            final = self.runs.finish(run_id, state=gateway_pb2.RUN_STATE_FAILED, reason=str(exc))
        except Exception as exc:  # a run never stays RUNNING
            log.exception("run %s: gateway error", run_id)
            final = self.runs.finish(run_id, state=gateway_pb2.RUN_STATE_FAILED, reason=f"gateway error: {exc}")
        finally:
            with self.active_lock:
                self.active.pop(run_id, None)
        log.info("run %s %s %s", run_id, gateway_pb2.RunState.Name(final.state), final.reason)

    @staticmethod
    def _gate(spec, evaluation) -> tuple[bool, str]:
        """The deploy gate's verdict: (deploy?, why)."""
        threshold = spec.evaluate.deploy_if_at_least
        if not threshold:
            return True, "deployed: no deploy gate"
        metric = spec.evaluate.metric or "accuracy"
        if evaluation is None:
            return (
                False,
                f"not deployed: the gate needs held-out rows to measure {metric} (set split.validation or split.test)",
            )
        if metric not in evaluation.metrics:
            return False, (
                f"not deployed: the evaluation has no {metric} (classifiers: accuracy, macro_*; regressors: r2; "
                "detectors: map50, map)"
            )
        value = evaluation.metrics[metric]
        subset = "test" if evaluation.subset == data_pb2.SUBSET_TEST else "validation"
        if value >= threshold:
            return True, f"deployed: {subset} {metric} {value:.4f} >= {threshold}"
        return False, f"not deployed: {subset} {metric} {value:.4f} < {threshold}"

    def _checked(self, active: _Active, stage: int, exc: grpc.RpcError) -> Exception:
        """The exception a failed stage call stands for: cancelled by us, or a stage failure."""
        if active.cancelled.is_set():
            return _Cancelled()
        return _StageFailed(stage, exc)

    def _retrying(self, active: _Active, stage: gateway_pb2.Stage, start, on_response, unary: bool = False) -> None:
        """Runs a stage's call (streaming, or `unary`), again when it fails UNAVAILABLE (the service died, or
        the object store stayed unreachable through the service's own retries): up to
        COOKLINE_STAGE_RETRIES more attempts, each once the service reports SERVING again.

        Only for idempotent stages: collect's versions are content-addressed (a retry reuses or
        rewrites the same version), train continues from the run's last checkpoint, and loading
        a model version that is already loaded changes nothing.
        """
        run_id, service = active.run_id, STAGE_SERVICES[stage]
        for attempt in range(1, stage_retries() + 2):
            try:
                call = active.track(start())
                if unary:  # a future: its one response
                    on_response(call.result())
                    return
                for response in call:
                    on_response(response)
                return
            except grpc.RpcError as exc:
                failure = self._checked(active, stage, exc)
                if (
                    isinstance(failure, _Cancelled)
                    or exc.code() != grpc.StatusCode.UNAVAILABLE
                    or attempt > stage_retries()
                ):
                    raise failure from None
                self._stage(
                    run_id, stage, False, f"attempt {attempt} lost the {service} service ({exc.details()}); retrying"
                )
                try:
                    channels.wait_healthy(config.address(service), timeout=120)
                    # ... and on the stage's own channel, which may still be in reconnect backoff from
                    # the lost connection: the retried call then goes out on a ready connection.
                    health_pb2_grpc.HealthStub(self.stage_channels[service]).Check(
                        health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True
                    )
                except (TimeoutError, grpc.RpcError):
                    raise failure from None

    def _collect(self, run_id, spec, active: _Active):
        if spec.collect.dataset:
            return self._use_stored(active, spec.collect.dataset)
        self._stage(run_id, gateway_pb2.STAGE_COLLECT, False, f"ingesting {spec.collect.source}")
        request = collect_pb2.IngestRequest(dataset=spec.name, source=spec.collect, strict=spec.strict)
        last: list[collect_pb2.IngestResponse] = []

        def on_progress(progress):
            self.runs.append(run_id, ingest=progress)
            if progress.HasField("dataset"):
                last[:] = [progress]

        self._retrying(active, gateway_pb2.STAGE_COLLECT, lambda: self.collect.Ingest(request), on_progress)
        progress = last[0]
        info = progress.dataset
        self.runs.update(run_id, dataset=info.ref)
        # Schema anomalies are in the last ingest event (structured); the stage line counts them.
        warnings = f", {len(progress.anomalies)} schema warnings" if progress.anomalies else ""
        self._stage(
            run_id,
            gateway_pb2.STAGE_COLLECT,
            True,
            f"dataset {info.ref.name}@{info.ref.version}: {info.num_rows} rows{warnings}",
        )
        return info.ref

    def _use_stored(self, active: _Active, value: str) -> data_pb2.DatasetRef:
        """collect.dataset: the stored version (pinned at submit) is the run's dataset; nothing is ingested."""
        run_id = active.run_id
        self._stage(run_id, gateway_pb2.STAGE_COLLECT, False, f"using stored dataset {value}")
        name, version = pipeline_spec.dataset_ref(value)
        request = collect_pb2.GetDatasetRequest(dataset=data_pb2.DatasetRef(name=name, version=version))
        found = []
        self._retrying(
            active,
            gateway_pb2.STAGE_COLLECT,
            lambda: self.collect.GetDataset.future(request, timeout=60),
            lambda response: found.append(response.dataset),
            unary=True,
        )
        info = found[0]
        self.runs.update(run_id, dataset=info.ref)
        self._stage(
            run_id,
            gateway_pb2.STAGE_COLLECT,
            True,
            f"dataset {info.ref.name}@{info.ref.version}: {info.num_rows} rows (stored, not re-ingested)",
        )
        return info.ref

    def _train(self, run_id, spec, dataset, active: _Active):
        self._stage(
            run_id, gateway_pb2.STAGE_TRAIN, False, f"training {spec.train.model} for {spec.train.epochs} epochs"
        )
        request = train_pb2.TrainRequest(run_id=run_id, dataset=dataset, pipeline=spec)
        results = []

        def on_response(response):
            if response.HasField("progress"):
                self.runs.append(run_id, train=response.progress)
            else:
                results.append(response.result)

        # the train service died mid-run: training continues from the run's checkpoint
        self._retrying(active, gateway_pb2.STAGE_TRAIN, lambda: self.train.Train(request), on_response)
        result = results[-1]
        metrics = dict(result.metrics)
        evaluation = result.evaluation if result.HasField("evaluation") else None
        self.runs.update(
            run_id,
            model=result.model,
            metrics=metrics,
            **({"evaluation": evaluation} if evaluation is not None else {}),
        )
        self._stage(run_id, gateway_pb2.STAGE_TRAIN, True, f"model {result.model.name} version {result.model.version}")
        return result.model, metrics, evaluation

    def _serve(self, run_id, model: model_pb2.ModelRef, active: _Active):
        """Deploys the run's version on every serve replica (gateway/replicas.py). When none could
        take it because serve was down (UNAVAILABLE), tried again like any stage; a replica that
        failed while others deployed it is named in the stage's message."""
        if active.cancelled.is_set():
            raise _Cancelled()
        stage = gateway_pb2.STAGE_SERVE
        self._stage(run_id, stage, False, f"loading {model.name} version {model.version}")
        request = registry_pb2.DeployModelRequest(model=model)
        for attempt in range(1, stage_retries() + 2):
            try:
                response = replicas.deploy(self.runs.store, request)
                break
            except Fail as exc:
                if active.cancelled.is_set():
                    raise _Cancelled() from None
                if exc.code != grpc.StatusCode.UNAVAILABLE or attempt > stage_retries():
                    raise _StageFailed(stage, exc) from None
                self._stage(run_id, stage, False, f"attempt {attempt} lost the serve service ({exc.message}); retrying")
                try:
                    channels.wait_healthy(config.address("serve"), timeout=120)
                except TimeoutError:
                    raise _StageFailed(stage, exc) from None
        failed = [r for r in response.replicas if r.code != "OK"]
        where = f"on {len(response.replicas) - len(failed)} of {len(response.replicas)} serve replicas"
        if failed:
            where += " (not on " + "; ".join(f"{r.address}: {r.code} {r.message}" for r in failed) + ")"
        self._stage(run_id, stage, True, f"serving {model.name} version {model.version} {where}")

"""The `cookline` command: up, health, validate, upload, run, predict, report, and the model registry
(models, alias, deploy, undeploy, delete-model, gc). Never imports TensorFlow."""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import threading

import grpc
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from cookline import channels, config
from cookline.client import TERMINAL, Client
from cookline.spec.sources import is_number
from cookline.v1 import data_pb2, gateway_pb2, model_pb2, pipeline_pb2, registry_pb2

GATEWAY_HELP = "gateway host:port (default COOKLINE_GATEWAY_ADDR or localhost:50050)"
console = Console(stderr=True, soft_wrap=True)  # long paths and messages stay on one line (copy-pasteable)


def _fail(exc: grpc.RpcError) -> int:
    console.print(f"[red]error[/red] {exc.code().name}: {escape(exc.details() or '')}")
    return 2


# What each service serves on its HTTP port (COOKLINE_<SERVICE>_HTTP_ADDR), printed by `cookline up`.
HTTP_PORTS = {"serve": "OIP v2 REST", "gateway": "dashboard"}


def cmd_up(args) -> int:
    from cookline.stack import MODULES, Stack

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with Stack(log_dir=args.log_dir) as stack:
        stack.start_all()
        scheme = "https" if config.tls_server_files() else "http"
        for service in MODULES:
            http = ""
            if service in HTTP_PORTS:
                http = f"   {HTTP_PORTS[service]} {scheme}://{config.http_address(service)}"
            console.print(f"  {service:8} {escape(config.address(service))}{escape(http)}")
        if args.log_dir:
            console.print(f"  logs     {escape(os.path.join(os.path.abspath(args.log_dir), '<service>.log'))}")
        try:
            stack.wait_healthy(timeout=args.timeout)
        except RuntimeError as exc:
            console.print(f"[red]stack did not start:[/red] {escape(str(exc))}")
            return 1
        console.print("[green]cookline is up[/green] (Ctrl-C stops it)")
        while not stopping.wait(0.5):
            if stack.exited():
                console.print(f"[red]service exited:[/red] {escape(str(stack.exited()))}; stopping")
                return 1
        console.print("stopping…")
    return 0


def cmd_health(args) -> int:
    try:
        for service in config.SERVICES:
            channels.wait_healthy(config.address(service), timeout=args.wait)
            console.print(f"  {service:8} {escape(config.address(service))} [green]SERVING[/green]")
            if args.verbose:
                for line in plugin_lines(service):
                    console.print(f"  {'':8} {line}", markup=False)
    except TimeoutError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        return 1
    return 0


def plugin_lines(service: str) -> list[str]:
    """`cookline health --verbose`: the plugins a service loaded (its ListPlugins), one per line."""
    from cookline.v1 import plugins_pb2, plugins_pb2_grpc

    with channels.channel(service) as channel:
        try:
            found = (
                plugins_pb2_grpc.PluginServiceStub(channel)
                .ListPlugins(plugins_pb2.ListPluginsRequest(), timeout=10)
                .plugins
            )
        except grpc.RpcError as exc:
            return [f"plugins: cannot list ({exc.code().name}: {exc.details()})"]
    if not found:
        return ["plugins: none"]
    lines = []
    for p in found:
        where = f"{p.distribution} {p.version}".strip()
        state = f"NOT LOADED: {p.error}" if p.error else f"params: {', '.join(p.params) or 'none'}"
        lines.append(f"plugin {p.kind} {p.name} ({where}) {state}")
    return lines


def cmd_validate(args) -> int:
    """Checks a pipeline file offline, with the rules the gateway applies (cookline.spec)."""
    from cookline import spec

    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        console.print(f"error: cannot read {args.file}: {exc.strerror}", markup=False)
        return 2
    try:
        pipeline = spec.parse(text, os.path.dirname(os.path.abspath(args.file)))
    except spec.SpecError as exc:
        console.print(f"error: {args.file}: {exc}", markup=False)
        return 2
    if args.output == "json":
        print(json_format.MessageToJson(pipeline, indent=None, preserving_proto_field_name=True))
        return 0
    for line in validate_summary(pipeline):
        print(line)
    return 0


def validate_summary(pipeline) -> list[str]:
    """The few lines `cookline validate` prints for a valid pipeline (defaults filled in)."""
    collect, train = pipeline.collect, pipeline.train
    label = f", label {collect.label}" if collect.label else ""
    from cookline.spec.ops import kind_of

    ops = ", ".join(str(kind_of(op)) for op in pipeline.process) or "none"
    split = (
        ", ".join(f"{k} {getattr(pipeline.split, k):g}" for k in ("validation", "test") if getattr(pipeline.split, k))
        or "none"
    )
    return [
        f"{pipeline.name}: valid",
        f"  collect  stored dataset {collect.dataset}"
        if collect.dataset
        else f"  collect  {collect.format or 'csv'} {collect.source}{label}",
        f"  process  {ops}",
        f"  split    {split}",
        f"  train    {train.model}, {train.epochs} epochs, batch {train.batch_size}, "
        f"{train.optimizer} at {train.learning_rate:g}",
    ]


def _metrics_line(metrics) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def _upload_bar(client: Client, path: str, name: str, source) -> data_pb2.DatasetInfo:
    """Uploads with a progress bar on stderr; returns the published dataset version."""
    with Progress(
        TextColumn("uploading {task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
    ) as bars:
        task = bars.add_task(name, total=None)
        return client.upload(
            path, name, source, progress=lambda sent, total: bars.update(task, completed=sent, total=total)
        )


def cmd_upload(args) -> int:
    source = pipeline_pb2.CollectSpec(
        format=args.format or _guess_format(args.path),
        label=args.label or "",
        categorical=args.categorical,
        no_header=args.no_header,
        columns=args.columns,
        numeric_label=args.numeric_label,
        color=args.color or "",
    )
    if args.image_size:
        source.image_size.extend(args.image_size)
    with Client(gateway=args.gateway) as client:
        try:
            info = _upload_bar(client, args.path, args.name, source)
        except OSError as exc:
            console.print(f"[red]error[/red] {escape(str(exc))}")
            return 2
        except grpc.RpcError as exc:
            return _fail(exc)
    console.print(
        f"dataset {info.ref.name}@{info.ref.version}: {info.num_rows} rows ({info.format}); "
        f"train on it with collect: {{dataset: {info.ref.name}@{info.ref.version}}}"
    )
    print(f"{info.ref.name}@{info.ref.version}")
    return 0


def _guess_format(path: str) -> str:
    """A folder is an image-folder, a .npz file npz, anything else csv (--format says otherwise)."""
    if os.path.isdir(path):
        return "image-folder"
    return "npz" if path.lower().endswith(".npz") else "csv"


def _local_source(file: str) -> tuple[str, dict, str] | None:
    """(pipeline name, collect section, local path) when the pipeline's collect.source is a file or
    folder on this machine (relative paths from the pipeline file's folder, then the working directory)."""
    with open(file, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    collect = data.get("collect") if isinstance(data, dict) else None
    source = collect.get("source") if isinstance(collect, dict) else None
    if not isinstance(collect, dict) or not isinstance(source, str) or "://" in source:
        return None
    for candidate in (os.path.join(os.path.dirname(os.path.abspath(file)), source), os.path.abspath(source)):
        if os.path.exists(candidate):
            return str(data.get("name", "")), dict(collect), candidate
    return None


def _submit_uploading(client: Client, args):
    """`cookline run`'s rule for local data: the pipeline is submitted as written; when the gateway
    cannot use collect.source (NOT_FOUND: its machine does not have it; PERMISSION_DENIED: outside its
    source roots) and the source exists on this machine, it is uploaded under the pipeline's name with
    the pipeline's collect options, and the pipeline is submitted again with collect.dataset set to
    the uploaded version. --upload always skips the first try; --upload never keeps the error."""
    if args.upload != "always":
        try:
            return client.submit_file(args.file)
        except grpc.RpcError as exc:
            retry = exc.code() in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
            ) and "collect.source" in (exc.details() or "")
            if args.upload == "never" or not retry or _local_source(args.file) is None:
                raise
            console.print(
                f"the gateway cannot read collect.source ({exc.code().name}: {escape(exc.details() or '')}); "
                "uploading it"
            )
    found = _local_source(args.file)
    if found is None:
        return client.submit_file(args.file)
    name, collect, path = found
    options = {k: v for k, v in collect.items() if k != "source"}
    source = json_format.ParseDict(options, pipeline_pb2.CollectSpec())
    info = _upload_bar(client, path, name, source)
    console.print(f"uploaded {escape(path)} as dataset {info.ref.name}@{info.ref.version} ({info.num_rows} rows)")
    with open(args.file, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    data["collect"] = {"dataset": f"{info.ref.name}@{info.ref.version}"}
    return client.submit(yaml.safe_dump(data, sort_keys=False))


def cmd_run(args) -> int:
    with Client(gateway=args.gateway) as client:
        try:
            run = _submit_uploading(client, args)
        except OSError as exc:
            console.print(f"[red]error[/red] cannot read {escape(args.file)}: {exc.strerror}")
            return 2
        except json_format.ParseError as exc:
            console.print(f"[red]error[/red] {escape(args.file)}: collect: {escape(str(exc))}")
            return 2
        except grpc.RpcError as exc:
            return _fail(exc)
        console.print(f"run [bold]{run.run_id}[/bold] ({escape(run.pipeline.name)}) submitted")
        final = None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=args.output == "json",
        ) as bars:
            epochs = None
            try:
                for event in client.watch(run.run_id):
                    kind = event.WhichOneof("event")
                    if kind == "stage":
                        mark = "[green]✓[/green]" if event.stage.finished else "→"
                        bars.console.print(
                            f"{mark} {gateway_pb2.Stage.Name(event.stage.stage)[6:].lower():8} "
                            f"{escape(event.stage.message)}"
                        )
                    elif kind == "train":
                        p = event.train
                        if epochs is None:
                            epochs = bars.add_task("training", total=p.epochs, info="")
                        if p.resumed_from_epoch:
                            bars.console.print(f"  resumed from the checkpoint of epoch {p.resumed_from_epoch}")
                        done = p.epoch if p.epoch_finished else p.epoch - 1
                        where = f"epoch {p.epoch}/{p.epochs}" + ("" if p.epoch_finished else f" batch {p.batch}")
                        bars.update(epochs, completed=done, info=f"{where} loss={p.metrics.get('loss', 0):.4f}")
                    elif kind == "finished":
                        final = event.finished
            except grpc.RpcError as exc:
                return _fail(exc)
            except KeyboardInterrupt:
                console.print(f"cancelling run {run.run_id}…")
                client.cancel(run.run_id)
                final = None
        if final is None:
            final = client.get_run(run.run_id)
    if args.output == "json":
        print(json_format.MessageToJson(final, preserving_proto_field_name=True, indent=None))
    elif final.state == gateway_pb2.RUN_STATE_SUCCEEDED:
        console.print(
            f"[green]SUCCEEDED[/green] model {escape(final.model.name)} version {final.model.version}: "
            f"{_metrics_line(final.metrics)}"
        )
        if final.HasField("evaluation"):
            console.print(
                f"  held-out evaluation ({final.evaluation.rows} rows): {_metrics_line(final.evaluation.metrics)}"
            )
        console.print(f"  {escape(final.deploy_decision)}")
    else:
        console.print(
            f"[red]{gateway_pb2.RunState.Name(final.state).removeprefix('RUN_STATE_')}[/red] {escape(final.reason)}"
        )
    return 0 if final.state == gateway_pb2.RUN_STATE_SUCCEEDED else 1


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")
_KIND_NAMES = {1: "numeric", 2: "category", 3: "text", 4: "image"}  # serve_pb2.InputKind


def _kind(spec) -> str:
    return _KIND_NAMES.get(spec.kind, "numeric")  # a model published before raw inputs: numeric


def _read_csv(path: str, meta) -> dict:
    """The model's raw inputs from a CSV with a header (other columns are ignored):
    numbers as floats (an empty cell is a missing value), category and text columns as strings."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        lines = [(n, row) for n, row in enumerate(reader, start=2) if row]
    wanted = {}
    for name, spec in meta.inputs.items():
        if _kind(spec) == "image":
            raise ValueError(f"model {meta.model.name!r} takes images (input {name!r}): use --image FILE...")
        columns = list(spec.columns) or (list(meta.feature_columns) if name == "features" else [])
        if not columns:
            raise ValueError(f"model {meta.model.name!r}: input {name!r} names no CSV columns; use --text")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: columns {', '.join(missing)} missing (the model takes {', '.join(columns)})")
        wanted[name] = (spec, columns, [header.index(c) for c in columns])
    inputs = {}
    for name, (spec, columns, index) in wanted.items():
        values = []
        for line_no, row in lines:
            try:
                cells = [row[i] for i in index]
            except IndexError:
                raise ValueError(f"{path} line {line_no}: expected {len(header)} columns, got {len(row)}") from None
            row_values: list = cells
            if _kind(spec) == "numeric":
                try:
                    row_values = [float(c) if c.strip() else float("nan") for c in cells]
                except ValueError:
                    bad = next(c for c in cells if c.strip() and not is_number(c))
                    raise ValueError(
                        f"{path} line {line_no}, column {columns[cells.index(bad)]!r}: {bad!r} is not a number"
                    ) from None
            values.append(row_values[0] if len(spec.shape) == 1 else row_values)
        inputs[name] = values
    return inputs


def _only_input(meta, kind: str, flag: str) -> str:
    """The name of the model's one input of `kind` (its only input)."""
    names = [n for n, spec in meta.inputs.items() if _kind(spec) == kind]
    if len(names) != 1 or len(meta.inputs) != 1:
        takes = ", ".join(f"{n} ({_kind(s)})" for n, s in meta.inputs.items())
        raise ValueError(f"{flag}: model {meta.model.name!r} takes {takes}; use --input rows.csv")
    return names[0]


def _image_files(paths: list[str]) -> list[str]:
    """Files as given; a folder gives its image files (by suffix), sorted."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = sorted(
                os.path.join(d, f) for d, _, names in os.walk(path) for f in names if f.lower().endswith(IMAGE_SUFFIXES)
            )
            if not found:
                raise ValueError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        else:
            files.append(path)
    return files


def _read_images(files: list[str]) -> list[bytes]:
    images = []
    for path in files:
        with open(path, "rb") as f:
            images.append(f.read())
    return images


def cmd_predict(args) -> int:
    given = [flag for flag, value in (("--input", args.input), ("--image", args.image), ("--text", args.text)) if value]
    if len(given) != 1:
        console.print('[red]error[/red] give one of --input rows.csv, --image FILE... or --text "a sentence"...')
        return 2
    sources: list[str] = []
    with Client(serve=args.serve) as client:
        try:
            meta = client.model_metadata(args.model, args.version)
            if args.image:
                files = _image_files(args.image)
                inputs, sources = {_only_input(meta, "image", "--image"): _read_images(files)}, files
            elif args.text:
                inputs, sources = {_only_input(meta, "text", "--text"): list(args.text)}, list(args.text)
            else:
                inputs = _read_csv(args.input, meta)
            count = len(next(iter(inputs.values()))) if inputs else 0
            if args.stream:
                results = []
                for cid, result, error in client.predict_stream(args.model, inputs, args.version):
                    results.append(result if error is None else {"error": error.message, "row": int(cid)})
            else:
                results = client.predict(args.model, inputs, args.version) if count else []
        except grpc.RpcError as exc:
            return _fail(exc)
        except (OSError, ValueError) as exc:
            console.print(f"[red]error[/red] {escape(str(exc))}")
            return 2
    for i, result in enumerate(results):
        source = sources[i] if sources else None
        if args.output == "json":
            print(json.dumps(result if source is None else {"input": source, **result}))
            continue
        if source is None:
            tail = ""
        else:  # a file path whole; a sentence cut to one short line
            tail = f"  {source}" if args.image else "  " + (source if len(source) <= 60 else source[:57] + "...")
        if "error" in result:
            print(f"row {result['row']}: error: {result['error']}{tail}")
        elif "value" in result:  # a regressor
            print(f"{result['value']:.6g}{tail}")
        elif "detections" in result:  # a detector: one line per box (ymin xmin ymax xmax, fractions)
            for found in result["detections"]:
                box = " ".join(f"{v:.3f}" for v in found["box"])
                print(f"{found['label']:20} {found['score']:.3f}  {box}{tail}")
            if not result["detections"]:
                print(f"{'(no objects)':20} {'':5}  {'':23}{tail}")
        else:
            best = result["scores"][result["label"]]
            print(f"{result['label']:20} {best:.3f}{tail}")
    return 1 if any("error" in r for r in results) else 0


def cmd_delete_model(args) -> int:
    request = registry_pb2.DeleteModelVersionRequest(name=args.model, version=args.version, force=args.force)
    with Client(gateway=args.gateway) as client:
        try:
            model = client.registry.DeleteModelVersion(request, timeout=60).model
        except grpc.RpcError as exc:
            return _fail(exc)
    left = ", ".join(str(v.version) for v in model.versions) or "none"
    console.print(f"deleted model {escape(args.model)} version {args.version} (versions left: {left})")
    return 0


# The metric `cookline models` shows per version: the first of these it has.
HEADLINE_EVALUATION = ("accuracy", "r2", "map50")
HEADLINE_TRAINING = ("val_accuracy", "accuracy", "val_loss", "loss")


def headline(version: registry_pb2.ModelVersionInfo) -> str:
    """A version's one metric: its held-out evaluation's (accuracy, r2 or map50) when it has one,
    else its final training metric; "-" when it has neither."""
    evaluation = version.evaluation.metrics
    for name in HEADLINE_EVALUATION:
        if name in evaluation:
            subset = "test" if version.evaluation.subset == data_pb2.SUBSET_TEST else "validation"
            return f"{name} {evaluation[name]:.4f} ({subset})"
    for name in HEADLINE_TRAINING:
        if name in version.metrics:
            return f"{name} {version.metrics[name]:.4f}"
    return "-"


def version_ranges(versions: list[int]) -> str:
    """1,2,3,5 -> "1-3, 5"."""
    parts: list[str] = []
    for v in versions:
        if parts and parts[-1].split("-")[-1] == str(v - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts) or "-"


def _aliases_text(aliases) -> str:
    return ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "-"


def _table(rows: list[list[str]]) -> None:
    """Columns padded to their widest cell (the last column is not padded), on stdout."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])


def cmd_models(args) -> int:
    """Every model (name, versions, deployed version, aliases, metric), or one model's versions."""
    with Client(gateway=args.gateway) as client:
        try:
            if args.model:
                models = [client.registry.GetModel(registry_pb2.GetModelRequest(name=args.model), timeout=60).model]
            else:
                models = list(client.registry.ListModels(registry_pb2.ListModelsRequest(), timeout=60).models)
        except grpc.RpcError as exc:
            return _fail(exc)
    if args.output == "json":
        for model in models:
            print(json_format.MessageToJson(model, preserving_proto_field_name=True, indent=None))
        return 0
    if not models:
        console.print("no models yet: a run publishes one (cookline run PIPELINE.yaml)")
        return 0
    if not args.model:
        rows = [["NAME", "VERSIONS", "DEPLOYED", "ALIASES", "METRIC"]]
        for model in models:
            shown = next((v for v in model.versions if v.deployed), model.versions[-1])
            rows.append(
                [
                    model.name,
                    version_ranges([v.version for v in model.versions]),
                    str(model.deployed_version or "-"),
                    _aliases_text(model.aliases),
                    f"{headline(shown)}, version {shown.version}",
                ]
            )
        _table(rows)
        return 0
    model = models[0]
    rows = [["VERSION", "CREATED", "DEPLOYED", "ALIASES", "DATASET", "METRIC"]]
    for v in model.versions:
        dataset = f"{v.lineage.dataset.name}@{v.lineage.dataset.version[:12]}" if v.lineage.dataset.name else "-"
        rows.append(
            [
                str(v.version),
                v.created_at,
                "yes" if v.deployed else "",
                ", ".join(v.aliases) or "-",
                dataset,
                headline(v),
            ]
        )
    _table(rows)
    return 0


def cmd_alias(args) -> int:
    request = registry_pb2.SetAliasRequest(name=args.model, alias=args.alias, version=args.version)
    with Client(gateway=args.gateway) as client:
        try:
            client.registry.SetAlias(request, timeout=60)
        except grpc.RpcError as exc:
            return _fail(exc)
    console.print(f"alias {escape(args.alias)} of model {escape(args.model)} -> version {args.version}")
    return 0


def _replica_lines(replicas, ok: tuple[str, ...], done: str) -> int:
    """Prints each serve replica's answer; 1 when one failed (an answer not in `ok`), else 0."""
    failed = 0
    for r in replicas:
        if r.code == "OK":
            console.print(f"  {escape(r.address)}: {done} version {r.version}")
        elif r.code in ok:
            console.print(f"  {escape(r.address)}: did not serve it")
        else:
            failed += 1
            console.print(f"  {escape(r.address)}: [red]{r.code}[/red] {escape(r.message)}")
    if failed:
        console.print(
            f"[red]error[/red] {failed} of {len(replicas)} serve replicas failed; run the command again "
            "once they are back (each replica also follows the store's deployed record when it starts)"
        )
    return 1 if failed else 0


def cmd_deploy(args) -> int:
    if args.version and args.alias:
        console.print("[red]error[/red] give --version or --alias, not both")
        return 2
    request = registry_pb2.DeployModelRequest(
        model=model_pb2.ModelRef(name=args.model, version=args.version or 0), alias=args.alias or ""
    )
    with Client(gateway=args.gateway) as client:
        try:
            response = client.registry.DeployModel(request, timeout=600)
        except grpc.RpcError as exc:
            return _fail(exc)
    deployed = response.metadata.model.version
    console.print(
        f"model {escape(args.model)} version {deployed} deployed "
        f"({escape(response.metadata.version_policy)}) on "
        f"{sum(r.code == 'OK' for r in response.replicas)} of {len(response.replicas)} serve replicas"
    )
    return _replica_lines(response.replicas, (), "serves")


def cmd_undeploy(args) -> int:
    with Client(gateway=args.gateway) as client:
        try:
            response = client.registry.UndeployModel(registry_pb2.UndeployModelRequest(name=args.model), timeout=120)
        except grpc.RpcError as exc:
            return _fail(exc)
    was = f" version {response.model.version}" if response.model.version else ""
    console.print(f"model {escape(args.model)}{was} undeployed")
    return _replica_lines(response.replicas, ("NOT_FOUND",), "stopped serving")


def cmd_gc(args) -> int:
    """Sweeps abandoned model versions (RegistryService.SweepAbandonedVersions); lists what it swept."""
    request = registry_pb2.SweepAbandonedVersionsRequest(dry_run=args.dry_run)
    if args.older_than is not None:
        request.older_than_seconds = args.older_than
    with Client(gateway=args.gateway) as client:
        try:
            response = client.registry.SweepAbandonedVersions(request, timeout=600)
        except grpc.RpcError as exc:
            return _fail(exc)
    verb = "would remove" if args.dry_run else "removed"
    for v in response.versions:
        print(f"{v.name} version {v.version}: {verb} {v.files} files ({v.bytes} bytes), idle {v.idle_seconds} s")
    total = sum(v.bytes for v in response.versions)
    console.print(
        f"{len(response.versions)} abandoned model versions (unpublished, idle over {response.older_than_seconds} s): "
        f"{verb} {total} bytes; their version numbers stay skipped"
    )
    return 0


def cmd_report(args) -> int:
    from cookline import report  # matplotlib loads only for this command

    with Client(gateway=args.gateway) as client:
        try:
            run = client.get_run(args.run)
            if run.state not in TERMINAL:
                console.print(
                    f"[red]error[/red] run {escape(args.run)} is {gateway_pb2.RunState.Name(run.state)[10:]}; "
                    "report it once it has ended"
                )
                return 2
            events = list(client.watch(args.run))
        except grpc.RpcError as exc:
            return _fail(exc)
    path = args.out or f"cookline-report-{args.run}.html"
    with open(path, "w", encoding="utf-8") as f:
        f.write(report.render(run, events))
    console.print(f"report written to {escape(path)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cookline", description="Run ML pipelines on a cookline stack.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the five services on this machine (Ctrl-C stops them)")
    up.add_argument("--log-dir", help="write each service's log to DIR/<service>.log instead of the terminal")
    up.add_argument("--timeout", type=float, default=180, help="seconds to wait for health (default 180)")
    up.set_defaults(func=cmd_up)

    health = sub.add_parser("health", help="check that every service answers SERVING")
    health.add_argument("--wait", type=float, default=5, help="seconds to wait for each service (default 5)")
    health.add_argument("--verbose", action="store_true", help="also list the plugins each service loaded")
    health.set_defaults(func=cmd_health)

    run = sub.add_parser("run", help="submit a pipeline file, show its progress, print its metrics")
    run.add_argument("file", help="the pipeline file (YAML)")
    run.add_argument(
        "--output", choices=["text", "json"], default="text", help="json: print the final run record as one JSON object"
    )
    run.add_argument("--gateway", help=GATEWAY_HELP)
    run.add_argument(
        "--upload",
        choices=["auto", "always", "never"],
        default="auto",
        help="upload a local collect.source: auto (default) when the gateway answers that it cannot "
        "read it and it is on this machine; always; never",
    )
    run.set_defaults(func=cmd_run)

    upload = sub.add_parser("upload", help="upload a local CSV, text CSV, NPZ or image folder as a dataset")
    upload.add_argument("path", help="the file (csv, text-csv, npz) or folder (image-folder, voc)")
    upload.add_argument("--name", required=True, help="dataset name; pipelines train on it with collect.dataset")
    upload.add_argument(
        "--format",
        choices=["csv", "text-csv", "image-folder", "voc", "npz"],
        help="default: image-folder for a folder, npz for *.npz, else csv",
    )
    upload.add_argument("--label", help="csv: the label column (required); npz: the label array (default label)")
    upload.add_argument(
        "--categorical",
        action="append",
        default=[],
        metavar="COLUMN",
        help="csv: a column of category strings (repeat for several)",
    )
    upload.add_argument("--no-header", action="store_true", help="csv: the file has no header row")
    upload.add_argument("--columns", nargs="+", default=[], help="csv with --no-header: the column names")
    upload.add_argument("--numeric-label", action="store_true", help="csv: the label is a number (regression)")
    upload.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="image-folder, voc: resize every image at ingest",
    )
    upload.add_argument("--color", choices=["grayscale", "rgb"], help="image-folder, voc: channels")
    upload.add_argument("--gateway", help=GATEWAY_HELP)
    upload.set_defaults(func=cmd_upload)

    validate = sub.add_parser("validate", help="check a pipeline file offline (no stack needed)")
    validate.add_argument("file", help="the pipeline file (YAML)")
    validate.add_argument(
        "--output",
        choices=["text", "json"],
        default="text",
        help="json: print the checked pipeline, defaults filled in, as one JSON object",
    )
    validate.set_defaults(func=cmd_validate)

    predict = sub.add_parser("predict", help="predict with a served model: rows of a CSV, image files or sentences")
    predict.add_argument("model", help="model name (the pipeline's name)")
    predict.add_argument("--input", help="CSV with a header and the model's columns (numbers, categories, text)")
    predict.add_argument(
        "--image", nargs="+", metavar="FILE", help="image files (PNG, JPEG, GIF, BMP) or folders of them"
    )
    predict.add_argument("--text", nargs="+", metavar="TEXT", help="sentences, one prediction each")
    predict.add_argument("--version", type=int, default=0, help="model version (default: the deployed one)")
    predict.add_argument("--stream", action="store_true", help="use the bidirectional PredictStream RPC")
    predict.add_argument(
        "--output", choices=["text", "json"], default="text", help="json: one JSON object per row with label and scores"
    )
    predict.add_argument("--serve", help="serve host:port (default COOKLINE_SERVE_ADDR or localhost:50054)")
    predict.set_defaults(func=cmd_predict)

    delete = sub.add_parser("delete-model", help="delete a model version from the registry")
    delete.add_argument("model", help="model name")
    delete.add_argument("version", type=int, help="version to delete")
    delete.add_argument(
        "--force", action="store_true", help="delete it even though other models were trained from it (train.base)"
    )
    delete.add_argument("--gateway", help=GATEWAY_HELP)
    delete.set_defaults(func=cmd_delete_model)

    models = sub.add_parser("models", help="list models (versions, deployed version, aliases, metric)")
    models.add_argument("model", nargs="?", help="one model: list its versions with lineage and metric")
    models.add_argument(
        "--output", choices=["text", "json"], default="text", help="json: one JSON object (ModelInfo) per model"
    )
    models.add_argument("--gateway", help=GATEWAY_HELP)
    models.set_defaults(func=cmd_models)

    alias = sub.add_parser("alias", help="point an alias (e.g. production) at a model version, creating or moving it")
    alias.add_argument("model", help="model name")
    alias.add_argument("alias", help="alias name, e.g. production")
    alias.add_argument("version", type=int, help="the published version it names")
    alias.add_argument("--gateway", help=GATEWAY_HELP)
    alias.set_defaults(func=cmd_alias)

    deploy = sub.add_parser("deploy", help="serve a model version on every serve replica")
    deploy.add_argument("model", help="model name")
    deploy.add_argument("--version", type=int, help="this version (default: the newest)")
    deploy.add_argument("--alias", help="the version this alias names (serve follows it at restart)")
    deploy.add_argument("--gateway", help=GATEWAY_HELP)
    deploy.set_defaults(func=cmd_deploy)

    undeploy = sub.add_parser("undeploy", help="stop serving a model on every serve replica")
    undeploy.add_argument("model", help="model name")
    undeploy.add_argument("--gateway", help=GATEWAY_HELP)
    undeploy.set_defaults(func=cmd_undeploy)

    gc = sub.add_parser("gc", help="remove the files of model versions whose publish died (unpublished, idle)")
    gc.add_argument(
        "--older-than",
        type=int,
        metavar="SECONDS",
        help="idle time after which an unpublished version is abandoned (default COOKLINE_ABANDONED_VERSION_S "
        "on the gateway, 3600); 0 also removes publishes in progress",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument("--gateway", help=GATEWAY_HELP)
    gc.set_defaults(func=cmd_gc)

    report = sub.add_parser("report", help="write an HTML report of a finished run (curves, confusion matrix)")
    report.add_argument("run", help="the run id")
    report.add_argument("--out", help="output file (default cookline-report-RUN.html)")
    report.add_argument("--gateway", help=GATEWAY_HELP)
    report.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

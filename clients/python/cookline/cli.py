"""The `cookline` command: up, health, run, predict. Never imports TensorFlow."""
from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import threading

import grpc
from google.protobuf import json_format
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from cookline import channels, config
from cookline.client import TERMINAL, Client
from cookline.v1 import gateway_pb2

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
        try:
            stack.wait_healthy(timeout=args.timeout)
        except RuntimeError as exc:
            console.print(f"[red]stack did not start:[/red] {escape(str(exc))}")
            return 1
        for service in MODULES:
            http = f"   {HTTP_PORTS[service]} http://{config.http_address(service)}" if service in HTTP_PORTS else ""
            console.print(f"  {service:8} {escape(config.address(service))}{escape(http)}")
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
    except TimeoutError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]")
        return 1
    return 0


def _metrics_line(metrics) -> str:
    return "  ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))


def cmd_run(args) -> int:
    with Client(gateway=args.gateway) as client:
        try:
            run = client.submit_file(args.file)
        except OSError as exc:
            console.print(f"[red]error[/red] cannot read {escape(args.file)}: {exc.strerror}")
            return 2
        except grpc.RpcError as exc:
            return _fail(exc)
        console.print(f"run [bold]{run.run_id}[/bold] ({escape(run.pipeline.name)}) submitted")
        final = None
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                      TimeRemainingColumn(), console=console, disable=args.output == "json") as bars:
            epochs = None
            try:
                for event in client.watch(run.run_id):
                    kind = event.WhichOneof("event")
                    if kind == "stage":
                        mark = "[green]✓[/green]" if event.stage.finished else "→"
                        bars.console.print(f"{mark} {gateway_pb2.Stage.Name(event.stage.stage)[6:].lower():8} "
                                           f"{escape(event.stage.message)}")
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
        console.print(f"[green]SUCCEEDED[/green] model {escape(final.model.name)} version {final.model.version}: "
                      f"{_metrics_line(final.metrics)}")
        if final.HasField("evaluation"):
            console.print(f"  held-out evaluation ({final.evaluation.rows} rows): "
                          f"{_metrics_line(final.evaluation.metrics)}")
        console.print(f"  {escape(final.deploy_decision)}")
    else:
        console.print(f"[red]{gateway_pb2.RunState.Name(final.state).removeprefix('RUN_STATE_')}[/red] {escape(final.reason)}")
    return 0 if final.state == gateway_pb2.RUN_STATE_SUCCEEDED else 1


def _read_rows(path: str, columns: list[str]) -> list[list[float]]:
    """The model's feature columns of a CSV with a header (other columns are ignored)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: columns {', '.join(missing)} missing (the model takes {', '.join(columns)})")
        index = [header.index(c) for c in columns]
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                rows.append([float(row[i]) for i in index])
            except (ValueError, IndexError):
                raise ValueError(f"{path} line {line_no}: a feature value is missing or not a number") from None
        return rows


def cmd_predict(args) -> int:
    with Client(serve=args.serve) as client:
        try:
            meta = client.model_metadata(args.model, args.version)
            rows = _read_rows(args.input, list(meta.feature_columns))
            if args.stream:
                results = []
                for cid, result, error in client.predict_stream(args.model, rows, args.version):
                    results.append(result if error is None else {"error": error.message, "row": int(cid)})
            else:
                results = client.predict(args.model, rows, args.version) if rows else []
        except grpc.RpcError as exc:
            return _fail(exc)
        except (OSError, ValueError) as exc:
            console.print(f"[red]error[/red] {escape(str(exc))}")
            return 2
    for result in results:
        if args.output == "json":
            print(json.dumps(result))
        elif "error" in result:
            print(f"row {result['row']}: error: {result['error']}")
        elif "value" in result:  # a regressor
            print(f"{result['value']:.6g}")
        else:
            best = result["scores"][result["label"]]
            print(f"{result['label']:20} {best:.3f}")
    return 1 if any("error" in r for r in results) else 0


def cmd_report(args) -> int:
    from cookline import report  # matplotlib loads only for this command
    with Client(gateway=args.gateway) as client:
        try:
            run = client.get_run(args.run)
            if run.state not in TERMINAL:
                console.print(f"[red]error[/red] run {escape(args.run)} is {gateway_pb2.RunState.Name(run.state)[10:]}; "
                              "report it once it has ended")
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
    health.set_defaults(func=cmd_health)

    run = sub.add_parser("run", help="submit a pipeline file, show its progress, print its metrics")
    run.add_argument("file", help="the pipeline file (YAML)")
    run.add_argument("--output", choices=["text", "json"], default="text",
                     help="json: print the final run record as one JSON object")
    run.add_argument("--gateway", help="gateway host:port (default COOKLINE_GATEWAY_ADDR or localhost:50050)")
    run.set_defaults(func=cmd_run)

    predict = sub.add_parser("predict", help="predict the rows of a CSV with a served model")
    predict.add_argument("model", help="model name (the pipeline's name)")
    predict.add_argument("--input", required=True, help="CSV with a header and the model's feature columns")
    predict.add_argument("--version", type=int, default=0, help="model version (default: the deployed one)")
    predict.add_argument("--stream", action="store_true", help="use the bidirectional PredictStream RPC")
    predict.add_argument("--output", choices=["text", "json"], default="text",
                         help="json: one JSON object per row with label and scores")
    predict.add_argument("--serve", help="serve host:port (default COOKLINE_SERVE_ADDR or localhost:50054)")
    predict.set_defaults(func=cmd_predict)

    report = sub.add_parser("report", help="write an HTML report of a finished run (curves, confusion matrix)")
    report.add_argument("run", help="the run id")
    report.add_argument("--out", help="output file (default cookline-report-RUN.html)")
    report.add_argument("--gateway", help="gateway host:port (default COOKLINE_GATEWAY_ADDR or localhost:50050)")
    report.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

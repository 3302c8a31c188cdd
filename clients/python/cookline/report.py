"""`cookline report RUN`: one self-contained HTML page about a run, with PNG plots
embedded: loss and metric curves per epoch, the confusion matrix, the key figures, and for a
detector held-out images with their true and predicted boxes."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")  # no display: render straight to PNG
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from cookline.v1 import data_pb2, gateway_pb2


def epoch_metrics(events) -> dict[int, dict[str, float]]:
    """Metrics of every finished epoch (a resumed run's later report of an epoch wins)."""
    epochs: dict[int, dict[str, float]] = {}
    for event in events:
        if event.WhichOneof("event") == "train" and event.train.epoch_finished:
            epochs[event.train.epoch] = dict(event.train.metrics)
    return dict(sorted(epochs.items()))


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def curves_png(epochs: dict[int, dict[str, float]]) -> str | None:
    """Loss (left) and the other metrics (right) against the epoch, train and validation."""
    if not epochs:
        return None
    x = list(epochs)
    names = sorted({k for m in epochs.values() for k in m})
    figure, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name in names:
        ax = loss_ax if name.endswith("loss") else metric_ax
        ax.plot(
            x, [epochs[e].get(name, np.nan) for e in x], label=name, linestyle="--" if name.startswith("val_") else "-"
        )
    for ax, title in ((loss_ax, "loss"), (metric_ax, "metrics")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _png(figure)


def confusion_png(evaluation) -> str | None:
    """The confusion matrix as a heat map with counts (rows: true class, columns: predicted)."""
    names = [c.name for c in evaluation.classes]
    if not names or len(evaluation.confusion_matrix) != len(names) ** 2:
        return None
    matrix = np.array(evaluation.confusion_matrix).reshape(len(names), len(names))
    size = 2 + 0.6 * len(names)
    figure, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if matrix[i, j] > matrix.max() / 2 else "black",
            )
    ax.set_title("confusion matrix")
    return _png(figure)


def detections_png(evaluation) -> str | None:
    """A detector's evaluated example images: true boxes dashed green, predicted boxes red with their
    label and score."""
    examples = list(evaluation.examples)
    if not examples:
        return None
    from PIL import Image  # matplotlib's own dependency

    figure, axes = plt.subplots(1, len(examples), figsize=(2.6 * len(examples), 2.9), squeeze=False)
    for ax, example in zip(axes[0], examples, strict=True):
        image = np.asarray(Image.open(io.BytesIO(example.image)))
        height, width = image.shape[:2]
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
        for boxes, colour, style in ((example.truth, "#2ca02c", "--"), (example.found, "#d62728", "-")):
            for found in boxes:
                y0, x0, y1, x1 = found.box
                ax.add_patch(
                    plt.Rectangle(
                        (x0 * width - 0.5, y0 * height - 0.5),
                        (x1 - x0) * width,
                        (y1 - y0) * height,
                        fill=False,
                        edgecolor=colour,
                        linestyle=style,
                        linewidth=1.5,
                    )
                )
                if style == "-":
                    ax.text(x0 * width, y0 * height - 1, f"{found.label} {found.score:.2f}", color=colour, fontsize=7)
        ax.set_axis_off()
    figure.suptitle("held-out images: true boxes (dashed green), predicted (red)", fontsize=9)
    return _png(figure)


def _table(rows: list[tuple[str, str]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def render(run: gateway_pb2.Run, events) -> str:
    """The report page for a run and its events."""
    epochs = epoch_metrics(events)
    state = gateway_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")
    figures = [
        (
            "key",
            _table(
                [
                    ("run", run.run_id),
                    ("pipeline", run.pipeline.name),
                    ("state", state),
                    ("reason", run.reason or "-"),
                    ("dataset", f"{run.dataset.name}@{run.dataset.version}" if run.dataset.name else "-"),
                    ("model", f"{run.model.name} version {run.model.version}" if run.model.name else "-"),
                    ("deployment", run.deploy_decision or "-"),
                    ("epochs", str(len(epochs))),
                    ("submitted", run.created_at),
                    ("finished", run.updated_at),
                ]
                + [(k, f"{v:.4f}") for k, v in sorted(run.metrics.items())]
            ),
        )
    ]
    curves = curves_png(epochs)
    if curves:
        figures.append(
            ("training curves", f'<img alt="loss and metrics per epoch" src="data:image/png;base64,{curves}">')
        )
    if run.HasField("evaluation"):
        evaluation = run.evaluation
        subset = data_pb2.Subset.Name(evaluation.subset).removeprefix("SUBSET_").lower()
        per_class = (
            "<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            + "".join(
                f"<tr><td>{html.escape(c.name)}</td><td>{c.precision:.3f}</td><td>{c.recall:.3f}</td>"
                f"<td>{c.f1:.3f}</td><td>{c.support}</td></tr>"
                for c in evaluation.classes
            )
            + "</table>"
        )
        overall = _table([(k, f"{v:.4f}") for k, v in sorted(evaluation.metrics.items())])
        matrix = confusion_png(evaluation)
        body = f"<p>{evaluation.rows} {subset} rows</p>{overall}{per_class if evaluation.classes else ''}"
        if matrix:
            body += f'<img alt="confusion matrix" src="data:image/png;base64,{matrix}">'
        boxes = detections_png(evaluation)
        if boxes:
            body += f'<img alt="predicted and true boxes" src="data:image/png;base64,{boxes}">'
        figures.append(("evaluation", body))
    sections = "".join(f"<h2>{html.escape(title)}</h2>{body}" for title, body in figures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cookline run {html.escape(run.run_id)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:0.5em 0}}th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
img{{max-width:100%}}</style></head>
<body><h1>Run {html.escape(run.run_id)}: {html.escape(run.pipeline.name)} ({state})</h1>{sections}</body></html>
"""

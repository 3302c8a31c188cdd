"""Evaluation on held-out rows. A classifier: accuracy, per-class and macro
precision/recall/F1, and the confusion matrix; a regressor: MAE, RMSE and R²."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cookline.v1 import data_pb2, train_pb2


def classification(
    predicted: np.ndarray,
    actual: np.ndarray,
    class_names: list[str],
    subset: data_pb2.Subset,
    loss: float | None = None,
) -> train_pb2.Evaluation:
    """Evaluation from predicted and true class ids (int arrays of equal length)."""
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (actual, predicted), 1)
    true_pos = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    precision = np.divide(true_pos, predicted_count, out=np.zeros(n), where=predicted_count > 0)
    recall = np.divide(true_pos, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    rows = int(confusion.sum())
    metrics = {
        "accuracy": float(true_pos.sum() / rows) if rows else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
    }
    if loss is not None:
        metrics["loss"] = float(loss)
    return train_pb2.Evaluation(
        subset=subset,
        rows=rows,
        metrics=metrics,
        confusion_matrix=confusion.reshape(-1).tolist(),
        classes=[
            train_pb2.ClassMetrics(name=name, precision=p, recall=r, f1=f, support=int(s))
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        ],
    )


def regression(predicted: np.ndarray, actual: np.ndarray, subset: data_pb2.Subset) -> train_pb2.Evaluation:
    """Evaluation from predicted and true values (float arrays of equal length).

    R² is 1 - SSE / SST; 0 when the true values do not vary (no variance to explain).
    """
    error = predicted.astype(np.float64) - actual.astype(np.float64)
    rows = len(actual)
    mse = float(np.mean(error**2)) if rows else 0.0
    total = float(np.sum((actual - actual.mean()) ** 2)) if rows else 0.0
    metrics = {
        "mae": float(np.mean(np.abs(error))) if rows else 0.0,
        "rmse": mse**0.5,
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else 0.0,
        "loss": mse,
    }
    return train_pb2.Evaluation(subset=subset, rows=rows, metrics=metrics)


def evaluate_model(
    model, batches: Iterable[tuple[np.ndarray, np.ndarray]], class_names: list[str], subset: data_pb2.Subset
) -> train_pb2.Evaluation:
    """Runs `model` over (features, label) batches and evaluates its argmax predictions
    (its single output, for a regressor: no class names)."""
    if not class_names:
        predicted, actual = [], []
        for features, values in batches:
            predicted.append(model(features, training=False).numpy().reshape(-1))
            actual.append(values)
        return regression(
            np.concatenate(predicted) if predicted else np.zeros(0),
            np.concatenate(actual) if actual else np.zeros(0),
            subset,
        )
    predicted, actual, loss_sum = [], [], 0.0
    for features, labels in batches:
        scores = model(features, training=False).numpy()
        predicted.append(scores.argmax(axis=1))
        actual.append(labels)
        picked = scores[np.arange(len(labels)), labels]
        loss_sum += float(-np.log(np.clip(picked, 1e-7, 1.0)).sum())
    predicted_ids = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
    actual_ids = np.concatenate(actual).astype(np.int64) if actual else np.zeros(0, np.int64)
    loss = loss_sum / len(actual_ids) if len(actual_ids) else None
    return classification(predicted_ids, actual_ids, class_names, subset, loss)

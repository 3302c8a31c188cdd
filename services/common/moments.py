"""Chan et al.'s parallel merge of streaming means and variances, shared by collect's
statistics and the standardize op."""

from __future__ import annotations


def merge(running: tuple, batch: tuple) -> tuple:
    """Two groups' (count, mean, m2) merged into one: each is its rows, their mean and their sum of
    squared deviations m2. Works elementwise on numpy arrays (one entry per column) as on floats;
    the variance is m2 / count."""
    (count, mean, m2), (n, batch_mean, batch_m2) = running, batch
    total = count + n
    delta = batch_mean - mean
    return total, mean + delta * n / total, m2 + batch_m2 + delta**2 * count * n / total

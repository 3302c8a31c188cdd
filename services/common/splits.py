"""The train/validation/test split of a dataset: one seeded permutation of the row
indices with exact fractions, computed the same way by every service."""

from __future__ import annotations

import numpy as np

from cookline.spec.pipeline import check_split
from cookline.v1 import data_pb2


def sizes(num_rows: int, split: data_pb2.SplitSpec) -> dict[int, int]:
    """Rows per subset (SUBSET_TRAIN, SUBSET_VALIDATION, SUBSET_TEST)."""
    check_split(split)
    n_val = int(round(num_rows * split.validation))
    n_test = int(round(num_rows * split.test))
    return {
        data_pb2.SUBSET_TRAIN: num_rows - n_val - n_test,
        data_pb2.SUBSET_VALIDATION: n_val,
        data_pb2.SUBSET_TEST: n_test,
    }


def assignment(num_rows: int, split: data_pb2.SplitSpec) -> np.ndarray:
    """The subset of every row (uint8 Subset values)."""
    counts = sizes(num_rows, split)
    n_val, n_test = counts[data_pb2.SUBSET_VALIDATION], counts[data_pb2.SUBSET_TEST]
    order = np.random.default_rng(split.seed).permutation(num_rows)
    subsets = np.full(num_rows, data_pb2.SUBSET_TRAIN, dtype=np.uint8)
    subsets[order[:n_val]] = data_pb2.SUBSET_VALIDATION
    subsets[order[n_val : n_val + n_test]] = data_pb2.SUBSET_TEST
    return subsets


def subset_rows(info: data_pb2.DatasetInfo, split: data_pb2.SplitSpec) -> dict[int, int]:
    """Rows per subset of a dataset version (SUBSET_UNSPECIFIED: every row): the folders of a
    predefined split, else the seeded split's sizes."""
    if info.predefined_split:
        counts = info.statistics.split_counts
        rows: dict[int, int] = {
            data_pb2.SUBSET_TRAIN: counts.get("train", 0),
            data_pb2.SUBSET_VALIDATION: counts.get("validation", 0),
            data_pb2.SUBSET_TEST: counts.get("test", 0),
        }
    else:
        rows = sizes(info.num_rows, split)
    rows[data_pb2.SUBSET_UNSPECIFIED] = info.num_rows
    return rows

"""What a training run resolved before it fits, and how its fit starts: the values the steps of
TrainServicer.Train (and the distributed chief) hand each other, grouped so no step takes more
than a handful of parameters."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cookline.v1 import data_pb2, pipeline_pb2, train_pb2


def vocabulary_size(fitted_ops) -> int:
    """Token ids a text model embeds: padding, unknown and the last vectorize_text op's vocabulary."""
    texts = [op for op in fitted_ops if op.WhichOneof("kind") == "vectorize_text"]
    return len(texts[-1].fitted["vocabulary"].string_values) + 2 if texts else 0


@dataclass
class Plan:
    """A training run once its spec, dataset and ops are resolved (TrainServicer._plan)."""

    request: train_pb2.TrainRequest  # run id, dataset asked for, pipeline
    name: str  # the model's name (pipeline.name)
    spec: pipeline_pb2.TrainSpec  # train spec with every default filled in
    info: data_pb2.DatasetInfo  # the dataset, its version pinned: every epoch reads the same data
    fitted_ops: list[pipeline_pb2.Op]  # the pipeline's ops, fitted by process on the training rows
    # (tensor the model takes, its dtype, its per-row shape, the label's dtype: int32 ids or float32)
    source: tuple[str, str, list[int], str]
    rows: dict[int, int]  # rows per subset (data_pb2.SUBSET_*)
    class_weight: dict | None  # class id -> weight (train.class_weights); None: equal
    cancelled: threading.Event = field(default_factory=threading.Event)  # set when the call is cancelled
    base: Any = None  # the loaded train.base (transfer.Base: its network and lineage record); None: no base

    @property
    def dataset(self) -> data_pb2.DatasetRef:
        return self.info.ref

    @property
    def split(self) -> data_pb2.SplitSpec:
        return self.request.pipeline.split

    @property
    def fields(self) -> dict:
        """The dataset's schema: tensor name -> FieldSchema."""
        return {f.name: f for f in self.info.fields}

    @property
    def class_names(self) -> list[str]:
        """Class names in score order; empty for a regressor."""
        return list(self.fields["label"].class_names)

    @property
    def input_name(self) -> str:
        return self.source[0]

    @property
    def input_dtype(self) -> str:
        return self.source[1]

    @property
    def input_shape(self) -> list[int]:
        return self.source[2]

    @property
    def train_rows(self) -> int:
        return self.rows[data_pb2.SUBSET_TRAIN]

    @property
    def validation_rows(self) -> int:
        return self.rows[data_pb2.SUBSET_VALIDATION]

    @property
    def vocabulary_size(self) -> int:
        return vocabulary_size(self.fitted_ops)

    @property
    def row_bytes(self) -> int:
        """Bytes of one row of the model's input tensor."""
        return int(np.prod(self.input_shape, dtype=np.int64)) * np.dtype(self.input_dtype).itemsize


@dataclass
class Resume:
    """Where a fit starts and where it saves its epochs: the run's checkpoint, if it has one."""

    checkpoints: Any = None  # Checkpoints that save every epoch; None: no run id, or not worker 0
    first_epoch: int = 0  # epochs already done (0: a fresh start)
    model: Any = None  # the model restored after first_epoch; None: a fresh start
    metrics: dict = field(default_factory=dict)  # the metrics recorded after first_epoch


@dataclass
class Fitted:
    """The outcome of the fit step."""

    model: Any  # the trained keras.Model
    metrics: dict  # the last finished epoch's metrics
    warm_key: tuple | None = None  # its warm-model key when built here (warm.WarmModels), else None

"""The declarations: what a pipeline may say about each component, in cookline.spec's terms.

This module imports only cookline.spec, so the gateway and `cookline validate` can check a
pipeline that uses these plugins without loading numpy readers or TensorFlow. Each
`implementation` names what the services import when they run the component.
"""

from cookline.spec import Component, Param, SpecError


def _check_clip(values: dict, where: str) -> None:
    if values["lo"] >= values["hi"]:
        raise SpecError(f"{where}.hi: {values['hi']} is not above lo ({values['lo']})", f"{where}.hi")


JSONL = Component(
    "jsonl",
    "source",
    (
        Param("label", "str", "key of the label in each object (a class name)", default="label"),
        Param("features", "strs", "keys of the numeric features, in order; unset: every other key of line 1"),
    ),
    doc="JSON Lines: one JSON object per line, numeric features and a class label",
    implementation="cookline_example_plugins.jsonl:JsonLinesSource",
)

CLIP = Component(
    "clip",
    "op",
    (
        Param("lo", "float", "smallest value kept", default=-3.0),
        Param("hi", "float", "largest value kept", default=3.0),
    ),
    doc="clips every feature to [lo, hi] (for example outliers after standardize)",
    check=_check_clip,
    implementation="cookline_example_plugins.clip:Clip",
)

RESIDUAL_MLP = Component(
    "residual_mlp",
    "model",
    (
        Param("width", "int", "units of every dense layer", default=32, lo=1, hi=4096),
        Param("blocks", "int", "residual blocks (dense + skip connection)", default=2, lo=1, hi=16),
        Param("dropout", "float", "dropout rate after the blocks", default=0.0, lo=0, hi=0.9),
    ),
    doc="a dense network with residual blocks, on features",
    inputs=("features",),
    regressor=True,
    implementation="cookline_example_plugins.model:ResidualMlp",
)

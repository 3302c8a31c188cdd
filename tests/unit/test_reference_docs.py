"""docs/pipeline-reference.md and docs/configuration.md's table are generated from the single source
(the proto comments, the spec package, cookline.settings) by tests/support/reference_docs.py, and are
not stale; every environment variable the code reads is declared in cookline.settings."""

import os
import re

import reference_docs

from cookline import settings
from helpers import ROOT

FIX = f"regenerate it: {reference_docs.COMMAND}"


def test_the_generated_docs_are_not_stale():
    for path, text in reference_docs.expected().items():
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            assert f.read() == text, f"{path} is stale: {FIX}"


def test_the_pipeline_reference_covers_every_field_and_component():
    from cookline import spec
    from cookline.v1 import pipeline_pb2

    text = reference_docs.render_pipeline()
    for message in (pipeline_pb2.PipelineSpec, pipeline_pb2.CollectSpec, pipeline_pb2.TrainSpec, pipeline_pb2.Op):
        for field in message.DESCRIPTOR.fields:
            assert f"| `{field.name}` |" in text, f"{message.DESCRIPTOR.name}.{field.name}"
    for registry in (spec.SOURCES, spec.OPS, spec.MODELS):
        for component in registry:
            if not component.plugin:
                assert f"### `{component.name}`" in text
    # a default and a range come from the spec, a meaning from the proto comment
    assert "| `epochs` | int64 | `10` | `[1, 10000]` | Passes over the training split" in text


_READ = re.compile(r"""["']((?:COOKLINE|MINIO)_[A-Z0-9_]+)["']""")


def test_every_variable_the_code_reads_is_declared():
    """A variable quoted in the Python code is a row of docs/configuration.md (declare it in
    clients/python/cookline/settings.py, then regenerate)."""
    declared = {s.name for s in settings.SETTINGS}
    found = {}
    for top in ("clients/python/cookline", "services", "gateway", "deploy"):
        for folder, _dirs, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py") and name != "settings.py":
                    with open(os.path.join(folder, name), encoding="utf-8") as f:
                        for variable in _READ.findall(f.read()):
                            found.setdefault(variable, os.path.relpath(os.path.join(folder, name), ROOT))
    missing = {v: where for v, where in found.items() if v not in declared}
    assert not missing, f"not declared in cookline.settings (then {FIX}): {missing}"
    assert len(found) >= 20

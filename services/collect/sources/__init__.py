"""Sources: each turns one kind of input into a stream of row chunks.

A source yields chunks, dicts of numpy arrays sharing their first (row)
dimension, named as the dataset's tensors ("features", "categorical", "image",
"text", "label", and "subset" for a predefined split). Chunks are bounded, so a
source far larger than memory streams through. `open_source` picks the source
of a CollectSpec's format, built in or added by a plugin (docs/plugins.md).
"""

from __future__ import annotations

from cookline.spec import sources as spec_sources
from services.collect.sources.base import Source


def open_source(spec, path: str) -> Source:
    """The source reading `path` (a local file or folder) as spec.format."""
    component = spec_sources.source(spec.format)  # SpecError for a format no source has
    fmt = component.name
    if component.plugin:
        from services.collect.sources.plugin import PluginSource

        return PluginSource(component, spec_sources.plugin_values(spec), path)
    if fmt == "csv":
        from services.collect.sources.csv import CsvSource

        return CsvSource(spec, path)
    if fmt == "text-csv":
        from services.collect.sources.csv import TextCsvSource

        return TextCsvSource(spec, path)
    if fmt == "image-folder":
        from services.collect.sources.images import ImageFolderSource

        return ImageFolderSource(spec, path)
    if fmt == "voc":
        from services.collect.sources.images import VocSource

        return VocSource(spec, path)
    if fmt == "coco":
        from services.collect.sources.images import CocoSource

        return CocoSource(spec, path)
    if fmt == "npz":
        from services.collect.sources.npz import NpzSource

        return NpzSource(spec, path)
    raise NotImplementedError(f"collect.format: {fmt!r} is declared but has no source here")

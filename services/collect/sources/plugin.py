"""A source added by a plugin, behind the Source interface collect uses for the built-ins.

The plugin's implementation is a class taking (params, path): `params` are its declared
parameters, checked and with defaults; `path` is a local file or folder (an s3:// source is
fetched first). It has `files()` and `chunks()` as Source does, and, once the chunks are read,
`class_names` and `columns` (and, if it yields them, `categorical_columns`, `image_shapes`).
"""

from __future__ import annotations

from collections.abc import Iterator

from cookline.spec.params import Component
from services.collect.sources.base import Chunk, Source
from services.common import plugins


class PluginSource(Source):
    def __init__(self, component: Component, params: dict, path: str):
        self.format = component.name
        self.impl = plugins.implementation(component)(params, path)

    def files(self) -> list[tuple[str, str]]:
        return list(self.impl.files())

    def chunks(self) -> Iterator[Chunk]:
        yield from self.impl.chunks()

    @property
    def columns(self) -> list[str]:  # type: ignore[override]  # read live: the plugin learns it while reading
        return list(getattr(self.impl, "columns", []))

    @property
    def categorical_columns(self) -> list[str]:  # type: ignore[override]  # read live: the plugin learns it while reading
        return list(getattr(self.impl, "categorical_columns", []))

    @property
    def class_names(self) -> list[str]:  # type: ignore[override]  # read live: the plugin learns it while reading
        return list(getattr(self.impl, "class_names", []))

    @property
    def image_shapes(self) -> dict[str, int]:  # type: ignore[override]  # read live: the plugin learns it while reading
        return dict(getattr(self.impl, "image_shapes", {}))

    @property
    def predefined_split(self) -> bool:  # type: ignore[override]  # read live: the plugin learns it while reading
        return bool(getattr(self.impl, "predefined_split", False))

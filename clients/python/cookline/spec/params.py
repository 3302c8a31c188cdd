"""Declarative parameters and components (Ludwig-style): the terms every rule is written in.

A `Param` is one setting: its name, type, default, range or choices, and what it means.
A `Component` is one source, op or model family: its name and its Params, plus flags the
stages act on. A `Registry` holds the components of one kind; built-ins and plugins
register the same way, so a plugin's parameters validate like a built-in's.

Unset follows proto3: 0, 0.0, "", False and an empty list or map mean "not given", and the
Param's default (if any) stands in for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cookline.spec.errors import SpecError

TYPES = ("int", "float", "str", "bool", "ints", "floats", "strs", "map", "strmap")
_SCALAR = {"int": int, "float": float, "str": str, "bool": bool}


def number(value) -> str:
    """A bound as the messages print it: 1e6 -> 1000000, 0.5 -> 0.5."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def is_unset(value) -> bool:
    """True for proto3's "not given": None, 0, 0.0, "", False, an empty list or map."""
    if value is None or value is False:
        return True
    if isinstance(value, (int, float, str)):
        return not value
    try:
        return len(value) == 0
    except TypeError:
        return False


@dataclass(frozen=True)
class Param:
    """One parameter of a component.

    - `type`: "int", "float", "str", "bool", or a list ("ints", "floats", "strs"), or "map" (str -> float),
      or "strmap" (str -> str; `choices` bound the values).
      For lists and maps, `lo`/`hi` bound each element.
    - `default`: what an unset value means; None: unset stays unset.
    - `required`: an unset value is an error (a number is then checked as given, so 0 fails its range).
    - `lo`, `hi`, `lo_open`: the closed (or left-open) range of a number.
    - `choices`: the allowed strings; `choices_say` picks the message ("one of" or "supported").
    - `absent`: for a model family's own parameter, the message when another family is given it
      ({model} is replaced); empty: "applies to model X, not 'Y'; remove it".
    """

    name: str
    type: str
    doc: str = ""
    default: Any = None
    required: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    choices: tuple[str, ...] = ()
    choices_say: str = "one of"
    absent: str = ""

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"Param {self.name!r}: type {self.type!r} is not one of {', '.join(TYPES)}")

    # --- description (docs, `cookline validate`, plugins listing) ---------------------

    def range_text(self) -> str:
        if self.lo is None and self.hi is None:
            return ""
        lo = "-inf" if self.lo is None else number(self.lo)
        hi = "inf" if self.hi is None else number(self.hi)
        return f"{'(' if self.lo_open else '['}{lo}, {hi}]"

    def describe(self) -> dict:
        """A JSON-able description of the parameter."""
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.default is not None:
            out["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        if self.required:
            out["required"] = True
        if self.range_text():
            out["range"] = self.range_text()
        if self.choices:
            out["choices"] = list(self.choices)
        if self.doc:
            out["doc"] = self.doc
        return out

    # --- validation -----------------------------------------------------------------

    def empty(self):
        """The unset value of the type: 0, 0.0, "", False, [] or {}."""
        return {"int": 0, "float": 0.0, "str": "", "bool": False, "map": {}}.get(self.type, [])

    def resolve(self, value, where: str, proto: bool = True):
        """The value with its default filled in, checked; SpecError naming `where` (the field's path).

        `proto`: the value comes from a proto3 field, where 0, "" and [] mean unset; otherwise (a
        plugin's parameters, from a mapping) only a missing value (None) is unset."""
        if value is None or (proto and is_unset(value)):
            if self.default is not None:
                value = self.default
            elif self.required and self.type in ("str", "strs", "map", "strmap"):
                raise SpecError(f"{where}: required", where)
            elif not self.required:
                return self.empty() if value is None else value
        if self.type == "int" and isinstance(value, float) and value.is_integer():
            value = int(value)  # 3.0 from a JSON or YAML number
        self._check_type(value, where)
        if self.type in ("ints", "floats"):
            for i, item in enumerate(value):
                self._check_number(item, f"{where}[{i}]")
        elif self.type == "map":
            for key, item in sorted(value.items()):
                self._check_number(item, f"{where}[{key!r}]")
        elif self.type in ("int", "float"):
            self._check_number(value, where)
        elif self.type == "str" and self.choices:
            self._check_choice(value, where)
        elif self.type == "strs" and self.choices:
            for i, item in enumerate(value):
                self._check_choice(item, f"{where}[{i}]")
        elif self.type == "strmap" and self.choices:
            for key, item in sorted(value.items()):
                self._check_choice(item, f"{where}.{key}")
        return value

    def _check_type(self, value, where: str) -> None:
        if self.type in _SCALAR:
            expected = _SCALAR[self.type]
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise SpecError(f"{where}: {value!r} is not a{'n' if self.type == 'int' else ''} {self.type}", where)
        elif self.type in ("map", "strmap"):
            if not isinstance(value, Mapping):
                raise SpecError(f"{where}: {value!r} is not a mapping", where)
        elif isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
            raise SpecError(f"{where}: {value!r} is not a list", where)

    def _check_number(self, value, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: {value!r} is not a number", where)
        if self.type in ("int", "ints") and isinstance(value, float) and not value.is_integer():
            raise SpecError(f"{where}: {value!r} is not a whole number", where)
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{where}: {value} is not in {self.range_text() or 'the finite numbers'}", where)
        low_ok = self.lo is None or (self.lo < value if self.lo_open else self.lo <= value)
        high_ok = self.hi is None or value <= self.hi
        if not (low_ok and high_ok):
            raise SpecError(f"{where}: {value} is not in {self.range_text()}", where)

    def _check_choice(self, value, where: str) -> None:
        if value not in self.choices:
            if self.choices_say == "supported":
                raise SpecError(f"{where}: {value!r} is not supported (supported: {', '.join(self.choices)})", where)
            raise SpecError(f"{where}: {value!r} is not one of {', '.join(self.choices)}", where)


@dataclass(frozen=True)
class Component:
    """One source, op or model family, as a pipeline names it.

    - `kind`: "source", "op" or "model".
    - `params`: its Params, in the order they are checked and listed.
    - `check(values, where)`: extra rules across parameters (values are resolved), raising SpecError.
    - `deterministic` (ops): False for ops whose output changes with the epoch (shuffle, random
      augmentation); they run on the TRAIN subset only and never at serving.
    - `inputs` (models): the tensors the family trains on, in order of preference.
    - `regressor` (models): it can fit a numeric label. `tfjs` (models): the TF.js export can write it.
    - `implementation`: "module:attribute" of what a service runs for it (plugins only; the service
      imports it, the spec never does). See docs/plugins.md for what each kind provides.
    - `plugin`: the distribution that registered it ("" for a built-in; set when loaded).
    """

    name: str
    kind: str
    params: tuple[Param, ...] = ()
    doc: str = ""
    check: Callable[[dict, str], None] | None = None
    deterministic: bool = True
    inputs: tuple[str, ...] = ()
    regressor: bool = False
    tfjs: bool = False
    implementation: str = ""
    plugin: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Param | None:
        """The parameter called `name`, or None when the component has none."""
        return next((p for p in self.params if p.name == name), None)

    def declared(self, name: str) -> Param:
        """The parameter called `name`, which the component declares (KeyError otherwise)."""
        found = self.param(name)
        if found is None:
            raise KeyError(f"{self.name} declares no parameter {name!r}")
        return found

    def resolve(self, values: Mapping[str, Any], where: str, strict: bool = True, proto: bool = True) -> dict:
        """Every parameter checked, defaults filled in; SpecError naming `where`.<param>.

        `strict`: a key that is no parameter of this component is an error ("unknown field").
        `proto`: the values are proto3 fields (0 and "" mean unset); False for a plugin's mapping.
        """
        if strict:
            known = {p.name for p in self.params}
            for key in values:
                if key not in known:
                    raise SpecError(
                        f"{where}: unknown field {key!r} (fields: {', '.join(sorted(known)) or 'none'})",
                        f"{where}.{key}",
                    )
        out = {p.name: p.resolve(values.get(p.name), f"{where}.{p.name}", proto) for p in self.params}
        if self.check is not None:
            self.check(out, where)
        return out

    def describe(self) -> dict:
        out = {"name": self.name, "kind": self.kind, "params": [p.describe() for p in self.params]}
        if self.doc:
            out["doc"] = self.doc
        if self.plugin:
            out["plugin"] = self.plugin
        return out


# Said after a name nothing registers: it may be a plugin that is not installed where the check ran.
PLUGIN_HINT = (
    "; a plugin's names exist once its package is installed beside the gateway and the services (docs/plugins.md)"
)


class Registry:
    """The components of one kind, by name, in registration order (built-ins first)."""

    def __init__(self, kind: str, field: str, say: str = "supported"):
        self.kind, self.field, self.say = kind, field, say
        self._items: dict[str, Component] = {}

    def register(self, component: Component, replace: bool = False) -> Component:
        if component.kind != self.kind:
            raise ValueError(f"{component.name!r} is a {component.kind}, not a {self.kind}")
        if component.name in self._items and not replace:
            raise ValueError(f"{self.kind} {component.name!r} is already registered")
        self._items[component.name] = component
        return component

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self._items.values())

    def get(self, name: str, where: str | None = None) -> Component:
        """The component called `name`; SpecError naming `where` (default: the registry's field) if none is."""
        try:
            return self._items[name]
        except KeyError:
            where = where or self.field
            raise SpecError(
                f"{where}: {name!r} is not supported (supported: {', '.join(self._items)}){PLUGIN_HINT}", where
            ) from None

    def plugins(self) -> list[Component]:
        return [c for c in self._items.values() if c.plugin]

"""Names of pipelines, datasets, models and aliases: one rule, so a name is never a path."""

from __future__ import annotations

import re

from cookline.spec.errors import SpecError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
NAME_RULE = "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit, at most 63 characters"


def check_name(field: str, value: str) -> str:
    """`value` if it is a valid name ([a-z0-9][a-z0-9._-]{0,62}, no '..'); SpecError naming `field` if not."""
    if not value:
        raise SpecError(f"{field} is required ({NAME_RULE})", field)
    if not NAME_RE.fullmatch(value) or ".." in value:
        raise SpecError(f"{field}: {value!r} is not a valid name ({NAME_RULE}, no '..')", field)
    return value

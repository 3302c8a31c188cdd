"""The one error of the spec package: a plain exception naming the field.

It carries no transport: the services' RPC layer (services/common/errors.py) maps it to
INVALID_ARGUMENT in one place, and the CLI prints it as one line.
"""

from __future__ import annotations

import re

_PATH = re.compile(r"[\w.\[\]'\"-]+")


class SpecError(ValueError):
    """A pipeline (or a part of one) breaks a rule. str() is the whole message, e.g.
    "process[2].resize.height: 0 is not in [1, 4096]"; `field` is the path it names (by default
    the message's text before its first colon). `status` is the gRPC status name the RPC layer
    answers with: INVALID_ARGUMENT, except for the subclasses below."""

    status = "INVALID_ARGUMENT"

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.message = message
        if not field:
            head = message.removeprefix("pipeline: ").split(":", 1)[0]
            field = head if _PATH.fullmatch(head) else ""
        self.field = field


class SourceDenied(SpecError):
    """collect.source leads outside the source roots (COOKLINE_SOURCE_ROOTS): PERMISSION_DENIED."""

    status = "PERMISSION_DENIED"


class SourceNotFound(SpecError):
    """collect.source does not exist on the services' machine: NOT_FOUND."""

    status = "NOT_FOUND"

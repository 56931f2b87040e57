"""Exceptions of the console."""

from __future__ import annotations

from hypervisor_shim.errors import ShimError

GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"


class ConsoleError(ShimError):
    """The console was used wrongly (bad guest name, socket in use, not started)."""


class QmpError(ShimError):
    """A QMP error reply: {"error": {"class": class_, "desc": desc}}."""

    def __init__(self, desc: str, class_: str = GENERIC_ERROR) -> None:
        super().__init__(desc)
        self.class_ = class_
        self.desc = desc

    def reply(self) -> dict[str, object]:
        return {"error": {"class": self.class_, "desc": self.desc}}

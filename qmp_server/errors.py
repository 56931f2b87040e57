"""Exceptions of the QMP server."""

from __future__ import annotations

GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"


class QmpServerError(Exception):
    """Root of the exceptions of qmp_server."""


class ServerError(QmpServerError):
    """The server was used wrongly (bad guest name, socket in use, not started)."""


class QmpError(QmpServerError):
    """A QMP error reply: {"error": {"class": class_, "desc": desc}}."""

    def __init__(self, desc: str, class_: str = GENERIC_ERROR) -> None:
        super().__init__(desc)
        self.class_ = class_
        self.desc = desc

    def reply(self) -> dict[str, object]:
        return {"error": {"class": self.class_, "desc": self.desc}}

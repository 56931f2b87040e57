"""A server's own commands: a table the caller gives the server.

    table = CommandTable([
        Command("query-things", query_things),                     # async (args) -> value
        Command("do-thing", do_thing, params=("what", "how"), usage="what=<x> [how=<y>]"),
    ], prefix="__org.example_")

Each command answers to its short name and, with a `prefix`, to the downstream name the
QMP spec asks additions to carry (`__org.example_do-thing`); `names()` lists both,
downstream first. Arguments not in `params` are refused ("Parameter 'x' is unexpected")
before `run` is called; `run` checks the rest (qmp_server.args) and raises `QmpError` to
refuse. Any other exception is a bug of the command: the server logs it and answers
GenericError "internal error in <name>: ...".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from qmp_server.args import Args, unexpected


@dataclass(frozen=True)
class Command:
    name: str  # the short name
    run: Callable[[Args], Awaitable[object]]
    params: tuple[str, ...] = ()  # every argument it accepts
    usage: str = ""  # for help texts and the README


class CommandTable:
    def __init__(self, commands: Iterable[Command], prefix: str = "") -> None:
        self.prefix = prefix
        self.commands = tuple(commands)
        self._by_name: dict[str, Command] = {}
        for c in self.commands:
            for name in self._names_of(c):
                if name in self._by_name:
                    raise ValueError(f"command {name!r} twice in the table")
                self._by_name[name] = c

    def _names_of(self, c: Command) -> list[str]:
        return [self.prefix + c.name, c.name] if self.prefix else [c.name]

    def names(self) -> list[str]:
        """Every name the commands answer to: downstream first, then the short one."""
        return [n for c in self.commands for n in self._names_of(c)]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Command:
        return self._by_name[name]

    async def run(self, name: str, args: Args) -> object:
        """Refuse arguments the command does not take, then run it (QmpError to refuse)."""
        command = self._by_name[name]
        unexpected(args, command.params)
        return await command.run(args)

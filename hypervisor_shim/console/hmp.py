"""A small HMP for the platform socket, so `qmp-shell -H` works there too.

A guest's socket passes `human-monitor-command` to its QEMU (QEMU's own HMP). The
platform socket has no QEMU behind it; without this, qmp-shell -H on it died on the
`CommandNotFound` reply (it expects a `return`). Here the command answers text, as
QEMU's HMP does, errors included ("unknown command: 'x'"), and offers a few read-only
commands on the platform's facade:

    help               the commands
    info pes           every PE: name, PAPR state, flags, owner, freeze count
    info policy        the freeze policy in force
    info timeline [N]  the last N (default 10) timeline entries

Changing things (inject, reset, policy) stays with the QMP commands, which check their
arguments.
"""

from __future__ import annotations

import json

from hypervisor_shim.platform import Platform
from qmp_server import Command, CommandTable, QmpError
from qmp_server.args import Args

HELP = """\
help               the commands of this HMP (the platform socket's; a guest's socket
                   passes HMP to its QEMU)
info pes           every PE: name, PAPR state, flags, owner, freeze count
info policy        the freeze policy in force
info timeline [N]  the last N (1..100, default 10) timeline entries
(inject, reset and policy changes: the QMP commands eeh-inject, eeh-reset-pe, eeh-set-policy)
"""
MAX_LINES = 100


async def _info_pes(plat: Platform) -> str:
    rows = [("pe", "state", "flags", "owner", "freezes")]
    for pe in await plat.query_pes():
        j = pe.to_json()
        rows.append((str(j["pe"]), str(j["state"]), ",".join(j["flags"]) or "-",
                     str(j["owner"] or "-"), str(j["freeze_count"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                   + "\r\n" for r in rows)


async def _info_policy(plat: Platform) -> str:
    policy = (await plat.query_policy()).to_json()
    return "".join(f"{k}: {json.dumps(v)}\r\n" for k, v in policy.items())


async def _info_timeline(plat: Platform, arg: str | None) -> str:
    try:
        n = 10 if arg is None else int(arg)
    except ValueError:
        return f"info timeline: not a number: {arg!r}\r\n"
    if not 1 <= n <= MAX_LINES:
        return f"info timeline: N must be 1..{MAX_LINES}\r\n"
    entries = await plat.timeline_tail(n)
    return "".join(json.dumps(e.to_json(), sort_keys=True) + "\r\n" for e in entries)


async def run_line(plat: Platform, line: str) -> str:
    """One HMP command line's output (text, as QEMU's HMP answers)."""
    words = line.split()
    if not words:
        return ""
    if words == ["help"] or words == ["?"]:
        return HELP.replace("\n", "\r\n")
    if words[0] == "info" and len(words) >= 2:
        if words[1:] == ["pes"]:
            return await _info_pes(plat)
        if words[1:] == ["policy"]:
            return await _info_policy(plat)
        if words[1] == "timeline" and len(words) <= 3:
            return await _info_timeline(plat, words[2] if len(words) == 3 else None)
        return f"info: unknown subcommand: {' '.join(words[1:])!r} (try: help)\r\n"
    return f"unknown command: {words[0]!r} (this is the platform socket's HMP; try: help)\r\n"


def hmp_commands(plat: Platform) -> CommandTable:
    """`human-monitor-command` on the platform socket."""

    async def run(args: Args) -> object:
        line = args.get("command-line")
        if not isinstance(line, str):
            raise QmpError("Invalid parameter type for 'command-line', expected: string"
                           if "command-line" in args else
                           "Parameter 'command-line' is missing")
        return await run_line(plat, line)

    return CommandTable([Command("human-monitor-command", run, ("command-line", "cpu-index"),
                                 "command-line=<text>")])

"""The guest's python3 started before the save: the zygote (runs IN a staged guest).

Stdlib only, on the root fs's python3. A staged guest (qemu_launcher.snapshot) waits in
stage 1 (qemu/initramfs-init.sh) for the launcher's go, and is saved there. Before it
waits, stage 1 starts this interpreter from the initramfs (where the launcher put the
root fs's python3 and the modules the guest command will import: `qemu_launcher.preload`),
which imports them all and then blocks on stage 1's request pipe. Every guest restored
from the saved state therefore has an interpreter already started, its imports done
(the checkout's own modules from copies, checked against the mounted checkout after the
go: any difference and they are dropped, to be imported from the checkout). Then,
through two pipes (fd 4: requests, fd 5: replies) that stage 1 made and stage 2
(qemu/guest-stage2.sh) inherits:

    (zygote)  preloaded <modules> <failed> <seconds>
    root DIR  ->  rooted         stage 1, its shares mounted: chroot into the new root
    run CMD ENV CWD OUT STATUS  ->  running | exec <why>
    quit                         nothing to run: exit

`run` names files stage 2 wrote: the guest command (CMD), its environment (ENV, as
/proc/self/environ: NUL-separated), its directory (CWD), the FIFO its output goes to
(OUT, read by stage 2's tee) and where the exit status goes (STATUS). A command of the
form `python3 -m MODULE ARGS...` (no shell syntax, `python3` on its PATH being this
interpreter, no PYTHON* variable that only a fresh interpreter reads) is run here: the
zygote forks; the child takes the command's environment, directory and output, reseeds
`random`, puts its directory and PYTHONPATH on sys.path and runs MODULE as `python3 -m`
would (runpy); the parent writes the child's exit status. Anything else is answered
`exec` and stage 2 runs the command with sh, as without a zygote.

What a restored interpreter shares with every guest restored from the same file: its
memory as saved. The kernel RNG is reseeded (vmgenid), so os.urandom differs, and the
child reseeds `random` from it. The hash seed cannot change in a running interpreter:
str/bytes hashes, hence the iteration order of sets (and of dicts built by hash, never
of dicts, which keep insertion order) of strings, are the same in all of them; nothing
here depends on hash randomization (it protects against hash flooding by untrusted keys;
guests read only their own platform's).

    python3 -m qemu_launcher.guest_zygote report    # JSON: how this python3 started,
                                                    # random and hash draws (tests)
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import random
import runpy
import shlex
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from importlib.machinery import PathFinder
from typing import NoReturn

REQUESTS_FD = 4
REPLIES_FD = 5
PRELOAD_LIST = "/usr/lib/eeh-zygote/preload"
CONSOLE_MARKER = "EEH-GUEST-ZYGOTE"
# shell syntax a `python3 -m` line must not have (quotes are fine: shlex reads them as sh
# does when none of these is present)
SHELL_CHARS = frozenset(";|&<>$`\\*?[]~#(){}!\n")
# PYTHON* variables the zygote applies itself; any other needs a fresh interpreter
APPLIED = frozenset({"PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"})
# set on `sys` in the zygote's child (a process-wide mark: the command may import this
# module from the checkout, a module object other than the zygote's own)
STARTED_ATTR = "_eeh_zygote_started"


class ZygoteError(Exception):
    """A request the zygote cannot serve (the reason is sent back)."""


@dataclass(frozen=True)
class Plan:
    """A guest command the zygote runs: `python3 -m module args...` in env and cwd."""

    module: str
    args: tuple[str, ...]
    argv: tuple[str, ...]  # the command's words, for sys.orig_argv
    env: dict[str, str]
    cwd: str


def started() -> dict[str, object]:
    """How this python3 started: {"how": "zygote", ...} in a command the zygote ran,
    else {"how": "exec"}."""
    mark = getattr(sys, STARTED_ATTR, None)
    return dict(mark) if isinstance(mark, dict) else {"how": "exec"}


def parse_env(raw: bytes) -> dict[str, str]:
    """NUL-separated NAME=VALUE entries (as /proc/PID/environ)."""
    env: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        if not entry:
            continue
        name, sep, value = entry.decode("utf-8", "surrogateescape").partition("=")
        if not sep or not name:
            raise ZygoteError(f"bad environment entry {entry[:40]!r}")
        env[name] = value
    return env


def plan(command: str, env: dict[str, str], cwd: str, python: str) -> Plan:
    """The plan for `command` (a guest command's text), or ZygoteError: why it needs
    a fresh process. `python`: this interpreter (realpath of sys.executable)."""
    text = command.rstrip("\n")
    bad = sorted(SHELL_CHARS & set(text))
    if bad:
        raise ZygoteError(f"shell syntax ({''.join(bad)!r})")
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ZygoteError(f"not one command: {e}") from None
    if len(words) < 3 or words[1] != "-m":
        raise ZygoteError("not `python3 -m MODULE ...`")
    if "=" in words[0] or not words[0].startswith("python3"):
        raise ZygoteError(f"{words[0]!r} is not python3")
    found = shutil.which(words[0], path=env.get("PATH", os.defpath))
    if found is None or os.path.realpath(found) != python:
        raise ZygoteError(f"{words[0]} on the command's PATH is {found}, not {python}")
    module = words[2]
    if not all(part.isidentifier() for part in module.split(".")):
        raise ZygoteError(f"module name {module!r}")
    fresh = sorted(k for k in env if k.startswith("PYTHON") and k not in APPLIED)
    if fresh:
        raise ZygoteError(f"{', '.join(fresh)} need a fresh interpreter")
    return Plan(module, tuple(words[3:]), tuple(words), env, cwd)


@dataclass(frozen=True)
class Preload:
    """The preload file (qemu_launcher.preload.Payload.listing)."""

    path: tuple[str, ...] = ()  # where the checkout's copies are (the guest's mount point)
    modules: tuple[str, ...] = ()
    checks: tuple[tuple[str, int, int], ...] = ()  # checkout source, size, mtime_ns

    @classmethod
    def read(cls, path: str) -> Preload:
        try:
            with open(path) as f:
                raw = json.load(f)
            return cls(tuple(raw["path"]), tuple(raw["modules"]),
                       tuple((str(p), int(n), int(t)) for p, n, t in raw["checks"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"{CONSOLE_MARKER} no preload list ({e})", file=sys.stderr)
            return cls()

    def stale(self) -> str | None:
        """The first checkout source whose size or mtime differs from the copy's."""
        for path, size, mtime_ns in self.checks:
            try:
                st = os.stat(path)
            except OSError as e:
                return f"{path}: {e.strerror}"
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                return path
        return None

    def drop_checkout_modules(self) -> int:
        """Forget every preloaded module from the checkout (they are imported again)."""
        roots = tuple(p.rstrip("/") + "/" for p in self.path)
        gone = [n for n, m in sys.modules.items()
                if str(getattr(m, "__file__", None) or "").startswith(roots)]
        for name in gone:
            del sys.modules[name]
        return len(gone)


def preload(p: Preload) -> tuple[int, list[str]]:
    """Import the modules of `p` (a module that fails is left to the command)."""
    done, failed = 0, []
    sys.path[1:1] = p.path
    try:
        for name in p.modules:
            try:
                importlib.import_module(name)
                done += 1
            except BaseException as e:  # any import may fail; none is fatal
                failed.append(f"{name}: {type(e).__name__}: {e}")
    finally:
        del sys.path[1:1 + len(p.path)]
    return done, failed


class Zygote:
    def __init__(self, requests: int = REQUESTS_FD, replies: int = REPLIES_FD) -> None:
        self.requests = requests
        self.replies = replies
        self._buf = b""
        self.modules = 0
        self.t_ready = 0.0
        self.preload = Preload()
        self.checkout = "not checked"

    def reply(self, line: str) -> None:
        os.write(self.replies, (line + "\n").encode())

    def next_request(self) -> list[str]:
        while b"\n" not in self._buf:
            chunk = os.read(self.requests, 4096)
            if not chunk:
                return ["quit"]
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace").split()

    def serve(self, p: Preload) -> int:
        t0 = time.monotonic()
        self.preload = p
        self.modules, failed = preload(p)
        for f in failed:
            print(f"{CONSOLE_MARKER} preload failed: {f}", file=sys.stderr)
        # what the child will not change, out of the collector's reach: fewer pages
        # written (copied) in the child by a collection
        gc.collect()
        gc.freeze()
        self.t_ready = time.monotonic()
        self.reply(f"preloaded {self.modules} {len(failed)} {self.t_ready - t0:.2f}")
        while True:
            words = self.next_request()
            if words[:1] == ["root"] and len(words) == 2:
                try:
                    os.chroot(words[1])
                    os.chdir("/")
                except OSError as e:
                    self.reply(f"error {e}")
                    return 1
                self.reply("rooted")
                # the checkout is mounted: compared now, while stage 1 and 2 go on (a
                # stat over 9p each: ~0.4 s of waiting if done after the request)
                self.checkout = self._check_checkout()
            elif words[:1] == ["run"] and len(words) == 6:
                return self.run(*words[1:])
            elif words[:1] == ["quit"]:
                return 0
            else:
                self.reply(f"error bad request {' '.join(words)[:80]}")

    def _check_checkout(self) -> str:
        """Whether the mounted checkout is the one the preloaded copies came from; if not,
        those modules are dropped (the command imports the checkout's own)."""
        stale = self.preload.stale()
        if stale is None:
            return "same"
        return f"differs at {stale}: {self.preload.drop_checkout_modules()} modules dropped"

    def run(self, cmd_file: str, env_file: str, cwd_file: str, out: str, status: str) -> int:
        try:
            with open(env_file, "rb") as f:
                env = parse_env(f.read())
            with open(cwd_file) as f:
                cwd = f.read().rstrip("\n")
            with open(cmd_file) as f:
                p = plan(f.read(), env, cwd, os.path.realpath(sys.executable))
            # read and write: a FIFO opened so does not wait for its reader (stage 2's
            # tee, started on the answer); the output's end is when this fd and the
            # child's are closed
            fd = os.open(out, os.O_RDWR)
        except (OSError, UnicodeDecodeError, ZygoteError) as e:
            self.reply(f"exec {e}")
            return 0
        if self.checkout == "not checked":  # a zygote never moved (tests on a host)
            self.checkout = self._check_checkout()
        self.reply("running")
        # if anything below fails, this process ends: the output ends with no status
        # written, which stage 2 reports (status 255)
        pid = os.fork()
        if pid == 0:
            self._child(p, fd)
        _, wait_status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(wait_status)
        with open(status, "w") as f:  # before the output's end: stage 2 reads it then
            f.write(f"{code if code >= 0 else 128 - code}\n")
        os.close(fd)
        return 0

    def _child(self, p: Plan, fd: int) -> NoReturn:
        since = time.monotonic() - self.t_ready
        checkout = self.checkout
        print(f"{CONSOLE_MARKER} python3 -m {p.module}: started from the pre-imported "
              f"interpreter ({self.modules} modules preloaded, {since:.1f} s ago; "
              f"checkout {checkout}) uptime={_uptime()}", flush=True)
        for n in (self.requests, self.replies):
            os.close(n)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.chdir(p.cwd)
        os.environ.clear()
        os.environ.update(p.env)  # putenv: subprocesses inherit it too
        base = [e for e in sys.path[1:] if e]  # without the zygote's own directory
        extra = [e for e in p.env.get("PYTHONPATH", "").split(":") if e]
        sys.path[:] = [os.getcwd(), *extra, *base]
        # the initramfs's directory listings go: the path finder lists sys.path anew.
        # Not importlib.invalidate_caches(): its PathFinder part imports importlib.metadata
        # (zipfile, inspect, email... ~45 ms natively, 0.75-1.1 s of a TCG guest's CPU,
        # measured in each guest) to clear a cache nothing here has filled
        sys.path_importer_cache.clear()
        for finder in sys.meta_path:
            if finder is not PathFinder and hasattr(finder, "invalidate_caches"):
                finder.invalidate_caches()
        sys.dont_write_bytecode = bool(p.env.get("PYTHONDONTWRITEBYTECODE"))
        _new_stdio(bool(p.env.get("PYTHONUNBUFFERED")))
        # stage 1 started the zygote in the background: SIGINT and SIGQUIT ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        random.seed()  # from os.urandom: the kernel's RNG, reseeded at the restore
        logging = sys.modules.get("logging")
        if logging is not None:  # relativeCreated counts from the command's start
            logging._startTime = time.time_ns()  # type: ignore[attr-defined]
        # run as `python3 -m` runs it: its code as __main__, not the module preloaded
        # under its name (runpy would warn, and a package's __main__ likewise)
        for name in (p.module, f"{p.module}.__main__"):
            sys.modules.pop(name, None)
        sys.argv = [p.module, *p.args]
        sys.orig_argv = list(p.argv)
        setattr(sys, STARTED_ATTR, {"how": "zygote", "modules": self.modules,
                                    "checkout": checkout})
        runpy.run_module(p.module, run_name="__main__", alter_sys=True)
        raise SystemExit(0)  # interpreter exit as after `python3 -m`: threads, atexit


def _new_stdio(unbuffered: bool) -> None:
    """sys.stdout/stderr on the new fds 1 and 2, as a fresh python3 makes them."""
    enc = sys.stdout.encoding if sys.stdout is not None else "utf-8"
    tty = os.isatty(1)
    sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding=enc,
                                  line_buffering=tty, write_through=unbuffered)
    sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding=enc,
                                  errors="backslashreplace", line_buffering=True,
                                  write_through=unbuffered)


def _uptime() -> str:
    try:
        with open("/proc/uptime") as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return "?"


def _report() -> int:
    print(json.dumps({"started": started(), "random": random.random(),
                      "urandom": os.urandom(8).hex(), "hash": hash("eeh-zygote"),
                      # imported by importlib.invalidate_caches() (python3 >= 3.12),
                      # ~1 s of a TCG guest's CPU: a command started from the zygote
                      # must not pay it
                      "importlib_metadata": "importlib.metadata" in sys.modules}))
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        return _report()
    if argv[:1] != ["serve"] or len(argv) not in (1, 2, 4):
        print("usage: python3 -m qemu_launcher.guest_zygote report\n"
              "       (stage 1: zygote.py serve [PRELOAD_FILE [REQUEST_FD REPLY_FD]])",
              file=sys.stderr)
        return 2
    fds = (int(argv[2]), int(argv[3])) if len(argv) == 4 else (REQUESTS_FD, REPLIES_FD)
    return Zygote(*fds).serve(Preload.read(argv[1] if len(argv) > 1 else PRELOAD_LIST))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

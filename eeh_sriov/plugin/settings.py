"""Where the pytest plugin finds things: the checkout guests mount, the runs directory, a
test's topology and what each of its guests runs.

Pure: the plugin reads the command line, the environment, the ini file and the markers at
its edge and passes the values in.

    co = resolve_checkout(SettingValues(option=None, env="/src/eeh", ini=None, ...))
    co.path, co.source                      # /src/eeh, "EEH_CHECKOUT"
    topology_path("topo.toml", test_file)   # <test file's directory>/topo.toml
    guest_commands([...marks], ["g1", "g2"], AGENT_COMMAND)  # {"g1": ..., "g2": ...}

The checkout (a clone of this project: it holds the guest image's recipe, and guests
mount it read-only at /mnt/repo and import eeh_abi and guest_drivers from it) is named by
`--eeh-checkout`, else `EEH_CHECKOUT`, else the ini option `eeh_checkout` (relative to
the ini file's directory), else it is the checkout the package is imported from, if it is
one. The first setting given decides: one that names no checkout is an error naming it,
never skipped for the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eeh_sriov.topology import DEFAULT_TOPOLOGY
from hypervisor_shim.errors import ShimError
from qemu_launcher.assets import BUILD_SCRIPT

CHECKOUT_OPTION = "--eeh-checkout"
CHECKOUT_ENV = "EEH_CHECKOUT"
CHECKOUT_INI = "eeh_checkout"
RUNS_OPTION = "--eeh-runs"
GUEST_COMMAND_MARKER = "eeh_guest_command"
TOPOLOGY_MARKER = "eeh_topology"
# The test's directory in every guest (read-only), first on the guest command's
# PYTHONPATH and its working directory; the checkout stays at /mnt/repo.
TEST_SHARE = "test"
TEST_DIR_IN_GUEST = f"/mnt/{TEST_SHARE}"
GUEST_PYTHONPATH = f"{TEST_DIR_IN_GUEST}:/mnt/repo"
HOW_TO_NAME = (f"name one with {CHECKOUT_OPTION}=DIR, the environment variable "
               f"{CHECKOUT_ENV}=DIR or the ini option {CHECKOUT_INI} = DIR")


class PluginError(ShimError):
    """Root of the pytest plugin's errors: a setting or marker it cannot use."""


class NoCheckout(PluginError):
    """No setting names a checkout and the package is not imported from one."""

    def __init__(self, package_dir: Path) -> None:
        super().__init__(f"eeh-sriov: no checkout of the project (the package is imported "
                         f"from {package_dir}, which is not one): {HOW_TO_NAME}")


class BadCheckout(PluginError):
    """A setting names a directory that is not a checkout."""

    def __init__(self, path: Path, source: str) -> None:
        super().__init__(f"eeh-sriov: {source} names {path}, which is not a checkout of the "
                         f"project (no {BUILD_SCRIPT})")
        self.path = path
        self.source = source


class BadMarker(PluginError):
    """A marker's arguments the plugin cannot use."""


@dataclass(frozen=True)
class SettingValues:
    """The raw values, as the plugin read them (None: not given)."""

    option: str | None = None  # --eeh-checkout, relative to cwd
    env: str | None = None  # EEH_CHECKOUT, relative to cwd
    ini: str | None = None  # eeh_checkout, relative to ini_dir
    ini_dir: Path | None = None  # the directory of the ini file that set it
    cwd: Path = field(default_factory=Path.cwd)
    package_dir: Path = Path(__file__).resolve().parents[2]  # holds eeh_sriov/


@dataclass(frozen=True)
class Checkout:
    path: Path
    source: str  # which setting named it

    def describe(self) -> str:
        return f"checkout {self.path} (from {self.source})"


def is_checkout(path: Path) -> bool:
    return (path / BUILD_SCRIPT).is_file()


def _given(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def resolve_checkout(v: SettingValues) -> Checkout:
    """The checkout: command line > environment > ini > the package's own checkout."""
    ini_dir = v.ini_dir or v.cwd
    given = [(v.option, v.cwd, CHECKOUT_OPTION), (v.env, v.cwd, CHECKOUT_ENV),
             (v.ini, ini_dir, f"ini option {CHECKOUT_INI}")]
    for value, base, source in given:
        if value is not None and _given(value):
            path = (base / Path(value.strip()).expanduser()).resolve()
            if not is_checkout(path):
                raise BadCheckout(path, source)
            return Checkout(path, source)
    if is_checkout(v.package_dir):
        return Checkout(v.package_dir, "the checkout the package is imported from")
    raise NoCheckout(v.package_dir)


def runs_dir(option: str | None, rootdir: Path, cwd: Path) -> Path:
    """Where each test's artifacts directory goes: --eeh-runs (relative to cwd), else the
    test project's own <rootdir>/runs."""
    if option is not None and _given(option):
        return (cwd / Path(option.strip()).expanduser()).resolve()
    return rootdir / "runs"


def topology_path(arg: object | None, test_file: Path) -> Path:
    """A topology marker's path: relative to the test file's directory; the shipped
    default topology without one."""
    if arg is None:
        return DEFAULT_TOPOLOGY
    if not isinstance(arg, str | Path) or str(arg).strip() == "":
        raise BadMarker(f"{TOPOLOGY_MARKER}: a path to a topology file, not {arg!r}")
    return test_file.parent / Path(arg).expanduser()


@dataclass(frozen=True)
class Mark:
    """A marker's arguments (pytest's Mark has the same two fields)."""

    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


def _one_mark(mark: Mark) -> dict[str | None, str]:
    """{guest or None (every guest): command} from one eeh_guest_command marker."""
    usage = (f"{GUEST_COMMAND_MARKER}(cmd), {GUEST_COMMAND_MARKER}(cmd, guest=NAME) or "
             f"{GUEST_COMMAND_MARKER}({{NAME: cmd, ...}})")
    extra = set(mark.kwargs) - {"guest"}
    if len(mark.args) != 1 or extra:
        raise BadMarker(f"{usage}; got args {mark.args!r}, keywords {sorted(mark.kwargs)}")
    arg, guest = mark.args[0], mark.kwargs.get("guest")
    if isinstance(arg, Mapping):
        if guest is not None:
            raise BadMarker(f"{usage}: a dict of commands takes no guest=")
        pairs: Iterable[tuple[object, object]] = arg.items()
    else:
        if guest is not None and not isinstance(guest, str):
            raise BadMarker(f"{usage}: guest= is a guest's name, not {guest!r}")
        pairs = [(guest, arg)]
    out: dict[str | None, str] = {}
    for name, cmd in pairs:
        if not isinstance(cmd, str) or not cmd.strip():
            raise BadMarker(f"{usage}: a command is a non-empty string, not {cmd!r}")
        if name is not None and not isinstance(name, str):
            raise BadMarker(f"{usage}: a guest's name is a string, not {name!r}")
        out[name] = cmd
    return out


def guest_commands(marks: Sequence[Mark], guests: Sequence[str],
                   default: str) -> dict[str, str]:
    """What each guest runs. `marks` closest first (pytest's iter_markers): for each
    guest the closest marker that names it or every guest wins; `default` without one.
    A marker naming a guest the topology does not have is an error."""
    out: dict[str, str] = {}
    for mark in reversed(marks):  # farthest first: closer ones overwrite
        cmds = _one_mark(mark)
        unknown = sorted(n for n in cmds if n is not None and n not in guests)
        if unknown:
            raise BadMarker(f"{GUEST_COMMAND_MARKER}: no guest {', '.join(unknown)} in the "
                            f"topology (its guests: {', '.join(guests)})")
        if None in cmds:
            out.update(dict.fromkeys(guests, cmds[None]))
        out.update({n: c for n, c in cmds.items() if n is not None})
    return {g: out.get(g, default) for g in guests}

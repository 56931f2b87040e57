"""The injectable error kinds: one table.

`INJECT_KINDS` says, for each `InjectKind`, what it takes and what it does; everything
else comes from it: `Platform.inject` dispatches through it, the console's `eeh-inject`
checks `kind` (and whether `function` applies) against it, and the CLI's `inject`
offers its kinds as choices.

Adding a kind (README "Console"; the recipe): a member of `InjectKind`, its `InjectSpec`
in `INJECT_KINDS` (its action runs on the model's loop thread: raise `PlatformError` to
refuse), a test on the real platform (tests/harness/test_inject_kinds.py), and a line in
the README's console table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from device_model import Adapter
from device_model.errors import DeviceModelError
from hypervisor_shim.pe import PeRecord
from hypervisor_shim.platform_api import Injection, PlatformError


class InjectKind(enum.StrEnum):
    ERRINJCT = "errinjct"
    ADAPTER_FATAL = "adapter-fatal"
    VF_ERROR = "vf-error"
    FREEZE = "freeze"


@dataclass(frozen=True)
class InjectRequest:
    """One injection, as its action gets it (on the model's loop thread)."""

    rec: PeRecord  # the target PE
    adapter: Adapter
    function: int | None  # the ibm,errinjct function code (kinds with takes_function)
    address: int  # 64-bit unsigned, 0 when not given
    mask: int
    detail: str  # for the error log: who asked, and why


@dataclass(frozen=True)
class InjectSpec:
    summary: str  # one line, for --help and the README
    takes_function: bool  # the ibm,errinjct function code is required (and allowed)
    act: Callable[[InjectRequest], Injection]
    detail: str = ""  # the error log's detail when the caller gives none ("<who>: <detail>")


def _errinjct(r: InjectRequest) -> Injection:
    assert r.function is not None  # takes_function: checked by Platform.inject
    inj = r.adapter.inject(r.rec.pe, r.function, r.address, r.mask)
    return Injection(r.rec.name, InjectKind.ERRINJCT, function=r.function, id=inj.id,
                     armed=True)


def _adapter_fatal(r: InjectRequest) -> Injection:
    if r.rec.pe is not r.adapter.pes.adapter:
        raise PlatformError("adapter-fatal is injected on the adapter PE")
    entry = r.adapter.inject_adapter_fatal(r.detail)
    return Injection(r.rec.name, InjectKind.ADAPTER_FATAL, log_seq=entry.seq)


def _vf_error(r: InjectRequest) -> Injection:
    index = getattr(r.adapter.function_of(r.rec.pe), "index", None)
    if index is None:
        raise PlatformError("vf-error is injected on a VF PE")
    entry = r.adapter.inject_vf_error(index, r.detail)
    return Injection(r.rec.name, InjectKind.VF_ERROR, log_seq=entry.seq)


def _freeze(r: InjectRequest) -> Injection:
    changed = r.rec.pe.freeze(r.detail)
    return Injection(r.rec.name, InjectKind.FREEZE, frozen=changed)


INJECT_KINDS: Mapping[InjectKind, InjectSpec] = {
    InjectKind.ERRINJCT: InjectSpec(
        "ibm,errinjct: an error function (0..19 or its name) armed on the PE, fired by "
        "the next matching access", True, _errinjct),
    InjectKind.ADAPTER_FATAL: InjectSpec(
        "an adapter internal error: the adapter PE and every VF PE freeze, logged",
        False, _adapter_fatal, "adapter fatal error"),
    InjectKind.VF_ERROR: InjectSpec(
        "an error local to one VF: its PE alone freezes, logged", False, _vf_error,
        "VF error"),
    InjectKind.FREEZE: InjectSpec(
        "freeze the PE (and the PEs below it) as a detected error would, with no "
        "hardware cause: no error-log entry, no AER status (Linux's eeh_dev_break)",
        False, _freeze, "freeze"),
}


def inject(kind: InjectKind, req: InjectRequest) -> Injection:
    """Dispatch `req` to its kind's action (on the model's loop thread)."""
    spec = INJECT_KINDS[kind]
    if spec.takes_function != (req.function is not None):
        raise PlatformError(f"kind {kind} {'needs' if spec.takes_function else 'takes no'} "
                            "error function")
    try:
        return spec.act(req)
    except DeviceModelError as e:
        raise PlatformError(str(e)) from None

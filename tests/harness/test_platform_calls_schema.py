"""Every platform call, driven from its schema entry against the real platform: a call
that names a PE is refused (-3, "no PE ... in this partition") for every caller that may
not act on that PE through it, and is not refused so for one that may. Who may is
written out here per call; the arguments are made from the schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eeh_abi.hcall import Channel
from eeh_abi.papr import Status
from eeh_abi.schema import CALL_SPECS, ArgType, Call
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
PF, VF0, VF1 = 0x10000, 0x18000, 0x18100
PE_OF = {"adapter": PF, "vf0": VF0, "vf1": VF1}
OWNER_OF = {"adapter": "svc", "vf0": "g1", "vf1": "g2"}
FOREIGN = "no PE"  # the reason of a refusal for a PE outside the partition


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS,
                         policy=PolicyConfig(errinjct=True))
    with Platform(cfg, tmp_path) as p:
        yield p


def args_for(call: Call, pe: int) -> dict[str, Any]:
    """Arguments that fit the call, its target naming `pe` (from the declaration)."""
    spec = CALL_SPECS[call]
    out: dict[str, Any] = {}
    for a in spec.args:
        if a.name == spec.target:
            out[a.name] = pe
        elif a.optional:
            continue
        elif a.choices is not None:
            out[a.name] = next(iter(a.choices))
        elif a.range is not None:
            out[a.name] = a.range[0]
        else:
            out[a.name] = {ArgType.INT: 0, ArgType.TEXT: "probe", ArgType.BOOL: True,
                           ArgType.NUMBER: 0.0, ArgType.OBJECT: {}, ArgType.LIST: []}[a.type]
    return out


# Who may act on which PE through each call that names one: the README's authorization
# rules, written out here per call (not read from the schema's actions or from
# hypervisor_shim.pe.access). A new call that names a PE must be added here by hand.
OWNED = {("svc", "adapter"), ("g1", "vf0"), ("g2", "vf1")}
READERS = OWNED | {("svc", "vf0"), ("svc", "vf1")}  # the PF's owner follows VF recovery
ADAPTER_OWNER = {("svc", "adapter")}
EXPECTED = {
    Call.REGISTER: OWNED, Call.REPORT: OWNED, Call.GET_CONFIG_ADDR_INFO2: READERS,
    Call.READ_SLOT_RESET_STATE2: READERS, Call.SET_EEH_OPTION: OWNED,
    Call.SET_SLOT_RESET: OWNED, Call.CONFIGURE_PE: OWNED, Call.SLOT_ERROR_DETAIL: OWNED,
    Call.OPEN_SRIOV_ALLOW_UNFREEZE: ADAPTER_OWNER, Call.ERRINJCT: OWNED,
}
TARGETED = [c for c, s in CALL_SPECS.items() if s.target is not None]


def test_every_call_that_names_a_pe_has_its_expectation() -> None:
    assert set(TARGETED) == set(EXPECTED)


@pytest.mark.parametrize("call", TARGETED)
def test_each_call_is_authorized_by_its_action(plat: Platform, call: Call) -> None:
    allowed = EXPECTED[call]
    channels = {o: Channel.unix(str(plat.hcall_path(o)), timeout=5) for o in ("svc", "g1", "g2")}
    try:
        for caller, ch in channels.items():
            for pe_name, pe in PE_OF.items():
                r = ch.call(call, **args_for(call, pe))
                refused = r.status == Status.PARAM_ERROR and FOREIGN in (r.error or "")
                assert refused == ((caller, pe_name) not in allowed), \
                    (call, caller, pe_name, r)
    finally:
        for ch in channels.values():
            ch.close()


def test_calls_that_name_no_pe_answer_everyone(plat: Platform) -> None:
    for call, spec in CALL_SPECS.items():
        if spec.target is not None:
            continue
        for owner in ("svc", "g1", "g2"):
            with Channel.unix(str(plat.hcall_path(owner)), timeout=5) as ch:
                r = ch.call(call, **args_for(call, 0))
                assert r.status == Status.SUCCESS, (call, owner, r)

"""query-partition: a caller learns its own name, what it owns and the policy values it
recovers under, from the real platform. Expected values are written out from the
configuration below, not computed by the platform's code."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2", "vf2": "g2"}
POLICY = PolicyConfig(retry_hint_ms=250, max_freezes=3, window_s=60.0, max_reset_failures=2,
                      errinjct=False)
EXPECTED_POLICY = {"retry_hint_ms": 250, "max_freezes": 3, "window_s": 60.0,
                   "max_reset_failures": 2, "errinjct": False}


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    cfg = PlatformConfig(total_vfs=4, enabled_vfs=3, owners=OWNERS, policy=POLICY)
    with Platform(cfg, tmp_path_factory.mktemp("qp")) as p:
        p.add_channel("nobody")
        yield p


def query(plat: Platform, owner: str) -> dict[str, object]:
    with Channel.unix(str(plat.hcall_path(owner)), timeout=5) as ch:
        r = ch.call(Call.QUERY_PARTITION)
    assert r.status == 0 and r.error is None, r
    return dict(r.ret)


def test_a_vf_owner_learns_its_name_functions_and_pes(plat: Platform) -> None:
    assert query(plat, "g2") == {
        "owner": "g2", "functions": ["vf1", "vf2"],
        "pes": [{"name": "vf1", "pe": 0x18100, "kind": "vf"},
                {"name": "vf2", "pe": 0x18200, "kind": "vf"}],
        "pf_owner": False, "policy": EXPECTED_POLICY}


def test_the_pf_owner_owns_the_adapter_pe(plat: Platform) -> None:
    assert query(plat, "svc") == {
        "owner": "svc", "functions": ["pf"],
        "pes": [{"name": "adapter", "pe": 0x10000, "kind": "adapter"}],
        "pf_owner": True, "policy": EXPECTED_POLICY}


def test_a_caller_that_owns_nothing_learns_only_its_name(plat: Platform) -> None:
    assert query(plat, "nobody") == {"owner": "nobody", "functions": [], "pes": [],
                                     "pf_owner": False, "policy": EXPECTED_POLICY}


def test_arguments_are_refused(plat: Platform) -> None:
    with Channel.unix(str(plat.hcall_path("g1")), timeout=5) as ch:
        r = ch.call(Call.QUERY_PARTITION, owner="g2")
    assert r.status == -3 and "unknown argument" in (r.error or ""), r

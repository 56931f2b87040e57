"""The PE policy's rules on the real platform (hypervisor_shim.platform.Platform in
harness mode), seen as a guest sees them: through its own platform channel and the
events pushed to it. Each rule here is also guarded by a unit test on the policy alone
(tests/unit/shim/test_pe_policy.py, test_drivers_model.py); these are the second,
independent guard, on the whole platform:

- the lockout refuses configure-pe (-2 with the retry hint) until the adapter driver
  allows that VF PE, and only that one;
- freezes older than the window no longer count (and within the window they do);
- an adapter freeze counts once, on the adapter PE, never on each VF PE;
- a VF driver disconnected by a permanent failure counts every frame it held as dropped:
  those in its TX ring and those in its backlog.

Expected values are written out here (the retry hint, the counts, the frames), never
read from the code under test.
"""

from __future__ import annotations

import time

from eeh_abi.hcall import Channel
from eeh_abi.papr import EehOption, PeState, SlotReset, Status
from eeh_abi.schema import Call
from guest_drivers.driver import DriverState
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import HOST, PolicyConfig
from tests.support.platform_rig import PlatformRig, frame, host_config, running
from tests.support.waiting import wait_for

ADAPTER, VF0, VF1 = 0x10000, 0x18000, 0x18100
GUESTS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}


def state(ch: Channel, pe: int) -> tuple[int, int, list[str]]:
    r = ch.call(Call.READ_SLOT_RESET_STATE2, pe=pe)
    assert r.status == 0, r
    return r.get("state"), r.get("retry_ms"), list(r.get("flags"))


def recover_adapter(svc: Channel) -> None:
    """What the adapter driver does before it may allow the VFs to unfreeze."""
    for fn in (SlotReset.HOT, SlotReset.DEACTIVATE):
        assert svc.call(Call.SET_SLOT_RESET, pe=ADAPTER, function=int(fn)).status == 0
    assert wait_for(lambda: state(svc, ADAPTER)[0] == PeState.NORMAL, 10)
    assert svc.call(Call.CONFIGURE_PE, pe=ADAPTER).status == 0


def recover_vf(ch: Channel, pe: int) -> None:
    """A VF PE's reset (an FLR), released, until it is back in state 0."""
    for fn in (SlotReset.HOT, SlotReset.DEACTIVATE):
        assert ch.call(Call.SET_SLOT_RESET, pe=pe, function=int(fn)).status == 0
    assert wait_for(lambda: state(ch, pe)[0] == PeState.NORMAL, 10)


def frozen_events(rig: PlatformRig, pe: str) -> list[dict[str, object]]:
    return [dict(e.data) for e in rig.policy("pe-frozen", pe)]


# ---- the lockout on configure-pe
def test_configure_pe_is_locked_out_until_that_vf_pe_is_allowed() -> None:
    cfg = host_config(nvfs=2, owners=GUESTS, policy=PolicyConfig(retry_hint_ms=250))
    with running(cfg) as rig:
        svc, g1, g2 = rig.channel("svc"), rig.channel("g1"), rig.channel("g2")
        assert g1.call(Call.CONFIGURE_PE, pe=VF0).status == 0  # no lockout: allowed
        rig.plat.inject_adapter_error()
        for ch, pe in ((g1, VF0), (g2, VF1)):
            r = ch.call(Call.CONFIGURE_PE, pe=pe)
            assert (r.status, r.get("retry_ms")) == (Status.BUSY, 250), r
            assert state(ch, pe)[:2] == (PeState.UNAVAILABLE, 250)
        refused = [(e.pe, e.data.get("retry_ms")) for e in rig.policy("unfreeze-refused")]
        assert refused == [("vf0", 250), ("vf1", 250)]
        assert [(e.owner, e.data["status"]) for e in rig.calls("configure-pe", "vf0")] == [
            ("g1", 0), ("g1", -2)]
        # the adapter recovered, but only vf0 allowed: vf1 stays locked out
        recover_adapter(svc)
        assert g2.call(Call.CONFIGURE_PE, pe=VF1).status == Status.BUSY, \
            "recovering the adapter alone must not lift the lockout"
        r = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=ADAPTER, vf_pes=[VF0])
        assert (r.status, r.get("allowed")) == (0, [VF0])
        assert g1.call(Call.CONFIGURE_PE, pe=VF0).status == 0
        r = g2.call(Call.CONFIGURE_PE, pe=VF1)
        assert (r.status, r.get("retry_ms")) == (Status.BUSY, 250)
        assert state(g2, VF1)[0] == PeState.UNAVAILABLE


# ---- the freeze window
def test_freezes_older_than_the_window_no_longer_count() -> None:
    window = 0.3
    cfg = host_config(nvfs=1, policy=PolicyConfig(max_freezes=1, window_s=window))
    with running(cfg) as rig:
        host = rig.channel(HOST)
        rig.plat.inject_vf_error(0)
        first = rig.policy("pe-frozen", "vf0")[0]
        recover_vf(host, VF0)
        # the window opened at the first freeze; let it pass (time passing, not a check)
        while time.monotonic() <= first.t + window + 0.05:
            time.sleep(0.02)
        rig.plat.inject_vf_error(0)
        assert [d["freeze_count"] for d in frozen_events(rig, "vf0")] == [1, 1]
        assert rig.policy("permanent-failure", "vf0") == []
        st, retry, flags = state(host, VF0)
        assert st == PeState.FROZEN and "permanent" not in flags, (st, retry, flags)
        assert rig.plat.pe_states()["vf0"]["freeze_count"] == 2  # both, in the total
        recover_vf(host, VF0)  # and it recovers as usual


def test_within_the_window_the_freeze_limit_holds() -> None:
    # the same two freezes, within an hour: the second is one more than max_freezes 1
    cfg = host_config(nvfs=1, policy=PolicyConfig(max_freezes=1, window_s=3600))
    with running(cfg) as rig:
        host = rig.channel(HOST)
        rig.plat.inject_vf_error(0)
        recover_vf(host, VF0)
        rig.plat.inject_vf_error(0)
        assert [d["freeze_count"] for d in frozen_events(rig, "vf0")] == [1, 2]
        assert [e.pe for e in rig.policy("permanent-failure")] == ["vf0"]
        st, retry, flags = state(host, VF0)
        assert (st, retry) == (PeState.UNAVAILABLE, 0) and "permanent" in flags
        assert host.call(Call.SET_SLOT_RESET, pe=VF0, function=int(SlotReset.HOT)).status \
            == Status.HW_ERROR


# ---- side-effect freezes
def test_an_adapter_freeze_counts_once_on_the_adapter_and_not_on_each_vf() -> None:
    cfg = host_config(nvfs=2, owners=GUESTS, policy=PolicyConfig(max_freezes=1))
    with running(cfg) as rig:
        svc, g1 = rig.channel("svc"), rig.channel("g1")
        rig.plat.inject_adapter_error()
        counts = {n: s["freeze_count"] for n, s in rig.plat.pe_states().items()}
        assert counts == {"adapter": 1, "vf0": 0, "vf1": 0}
        recover_adapter(svc)
        r = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=ADAPTER, vf_pes=[VF0, VF1])
        assert (r.status, r.get("allowed")) == (0, [VF0, VF1])
        for opt in (EehOption.THAW_MMIO, EehOption.THAW_DMA):
            assert g1.call(Call.SET_EEH_OPTION, pe=VF0, option=int(opt)).status == 0
        assert state(g1, VF0)[0] == PeState.NORMAL
        # vf0's own first error: within its limit of 1 whatever the adapter did before
        rig.plat.inject_vf_error(0)
        assert frozen_events(rig, "vf0")[-1]["freeze_count"] == 1
        st, retry, flags = state(g1, VF0)
        assert st == PeState.FROZEN and "permanent" not in flags, (st, retry, flags)
        assert rig.policy("permanent-failure") == []
        counts = {n: s["freeze_count"] for n, s in rig.plat.pe_states().items()}
        assert counts == {"adapter": 1, "vf0": 1, "vf1": 0}


# ---- what a permanent failure drops
def test_a_disconnect_counts_every_frame_held_in_the_ring_and_the_backlog() -> None:
    # max_freezes 0: the VF PE's first freeze is its permanent failure
    with running(host_config(nvfs=1, policy=PolicyConfig(max_freezes=0))) as rig:
        agent = rig.agent(vf_options={"tx_ring": 8})
        agent.start()
        vf = agent.drivers["vf0"]
        assert isinstance(vf, VfDriver)
        a = rig.plat.adapter
        rig.model(lambda: a.pf.bar0.set("VF_TXEN", 0))  # the adapter holds vf0's TX
        for i in range(10):
            assert vf.send(frame(vf.mac, tag=f"held{i}"))
        # an 8-descriptor ring takes 7 (one slot stays free); 3 wait in the backlog
        assert wait_for(lambda: rig.model(lambda: a.vf(0).nic.tx_pending) == 7, 10)
        assert vf.queued() == 10
        rig.plat.inject_vf_error(0)
        assert wait_for(lambda: vf.state is DriverState.FAILED, 10)
        c = vf.counters()["tx"]
        assert (c["submitted"], c["sent"], c["dropped"]) == (10, 0, 10), c
        assert c["drop_reasons"] == {"permanent-failure": 10} and c["balanced"], c
        assert vf.queued() == 0
        assert rig.model(lambda: a.vf(0).nic.ledger.tx_sent) == 0
        assert rig.uplink() == []
        assert wait_for(lambda: rig.steps("vf0")[-1:] == ["permanent-failure"])

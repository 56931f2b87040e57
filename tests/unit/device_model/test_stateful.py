"""Random sequences of guest accesses, traffic, injections, thaws and resets.

Invariants after every step:
- nothing passes a frozen gate: every DMA and interrupt happens while the function's PE
  reads state 0 (spies on each function's guest memory and interrupt sink), every load
  from a function whose PE is not in state 0/4 returns all-ones, and stores to it change
  no device state;
- no DMA outside the maps: canary bytes around the one map never change;
- accounting balances for every function; the model never raised or logged an internal
  error; every PE reports a valid PAPR state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from device_model import (
    Adapter,
    AdapterConfig,
    ManualClock,
    PeStateCode,
    QueueUplink,
    ResetTiming,
)
from device_model.function import Function
from device_model.nic import registers as R
from device_model.pci.layouts import PCIE_CAP, SRIOV_CAP
from device_model.testkit import MiniDriver, PfDriver, RamGuest, frame
from vfio_user.contract import RegionIndex
from vfio_user.memory import GuestMemory

NUM_VFS = 3
OTHER = bytes.fromhex("020000000099")
GATE_OPEN = PeStateCode.NORMAL
MMIO_OPEN = (PeStateCode.NORMAL, PeStateCode.DMA_STOPPED)


class GateSpy(GuestMemory):
    """One function's view of guest RAM that records any DMA through a closed gate."""

    def __init__(self, fn: Function, ram: RamGuest, violations: list[str]) -> None:
        super().__init__()
        for m in ram:
            self.map(m)
        self.fn = fn
        self.violations = violations

    def _check(self, what: str, addr: int) -> None:
        fn = self.fn
        code = fn.pe.status().code
        if code is not GATE_OPEN or not fn.exists or fn.in_reset or not fn.config.bus_master:
            self.violations.append(f"{fn.name} DMA {what} 0x{addr:x} in state {code.name}")

    def read(self, addr: int, length: int) -> bytes:
        self._check("read", addr)
        return super().read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self._check("write", addr)
        super().write(addr, data)


class SinkSpy:
    def __init__(self, fn: Function, violations: list[str]) -> None:
        self.fn = fn
        self.violations = violations
        self.fired = 0

    def trigger(self, index: int, vector: int) -> None:
        code = self.fn.pe.status().code
        if code is not GATE_OPEN:
            self.violations.append(f"{self.fn.name} interrupt {vector} in state {code.name}")
        self.fired += 1


def device_state(fn: Function) -> tuple[Any, ...]:
    return (fn.config.snapshot(), fn.bar0.snapshot(), fn.msix.snapshot(), fn.nic.tx_pending,
            fn.nic.tx_head, fn.nic.rx_head, fn.in_reset, fn.exists)


class AdapterMachine(RuleBasedStateMachine):
    adapter: Adapter
    clock: ManualClock
    uplink: QueueUplink
    ram: RamGuest
    violations: list[str]
    drivers: list[MiniDriver]

    @initialize(spec=st.booleans())
    def bring_up(self, spec: bool) -> None:
        self.clock = ManualClock()
        self.uplink = QueueUplink(maxlen=16)
        timing = ResetTiming.SPEC if spec else ResetTiming.FAST
        self.adapter = Adapter(AdapterConfig(total_vfs=NUM_VFS + 1, timing=timing),
                               self.clock, self.uplink)
        self.ram = RamGuest(size=1 << 18, guard=4096)
        self.violations = []
        self.drivers = []
        for fn in self.adapter.functions()[: NUM_VFS + 1]:
            cls = PfDriver if fn is self.adapter.pf else MiniDriver
            d = cls(fn, self.ram, attach=False)
            fn.attach(GateSpy(fn, self.ram, self.violations), SinkSpy(fn, self.violations))
            self.drivers.append(d)
        self.reinit_pf()
        for d in self.drivers[1:]:
            self._reinit(d)

    # ---- helpers
    def _reinit(self, d: MiniDriver) -> None:
        d.enable()
        d.setup_rings(tx_count=8, rx_count=8, buf_size=256)

    def _pe(self, k: int) -> Any:
        pes = list(self.adapter.pes)[: NUM_VFS + 1]
        return pes[k % len(pes)]

    # ---- guest driver actions
    @rule()
    def reinit_pf(self) -> None:
        pf = self.drivers[0]
        assert isinstance(pf, PfDriver)
        self._reinit(pf)
        pf.enable_vfs(NUM_VFS)
        pf.reset_done()

    @rule(k=st.integers(1, NUM_VFS))
    def reinit_vf(self, k: int) -> None:
        self._reinit(self.drivers[k])

    @rule(k=st.integers(0, NUM_VFS), n=st.integers(1, 5),
          kind=st.sampled_from(["good", "local", "short", "long", "unmapped"]))
    def transmit(self, k: int, n: int, kind: str) -> None:
        d = self.drivers[k]
        if not d.tx_count:
            return
        dst = self.drivers[(k + 1) % len(self.drivers)].mac() if kind == "local" else OTHER
        frames = {"short": [b"\x02" * 8] * n,
                  "long": [frame(dst, d.mac(), size=1700)] * n}.get(kind, [frame(dst, d.mac())] * n)
        d.post_tx(frames[: d.tx_count - 1], addr=0x7777_0000 if kind == "unmapped" else None)

    @rule(k=st.integers(0, NUM_VFS), n=st.integers(1, 9), bcast=st.booleans(),
          drain=st.booleans())
    def receive(self, k: int, n: int, bcast: bool, drain: bool) -> None:
        dst = b"\xff" * 6 if bcast else self.adapter.functions()[k].nic.switch_mac() or OTHER
        for _ in range(n):
            self.uplink.inject(frame(dst, OTHER))
        if drain:
            self.drivers[k].received()

    @rule(k=st.integers(0, NUM_VFS), tx=st.booleans(), back=st.integers(1, 64))
    def dma_at_the_edge(self, k: int, tx: bool, back: int) -> None:
        """A buffer that starts inside guest RAM and runs `64 - back` bytes past its end."""
        d = self.drivers[k]
        if not d.tx_count:
            return
        edge = self.ram.base + self.ram.size - back
        if tx:
            self.ram.poke(edge, frame(OTHER, d.mac())[:back])
            d.post_tx([frame(OTHER, d.mac())], addr=edge)
        else:
            desc = d.rx_ring + d.rx_next * 16
            self.ram.poke(desc, edge.to_bytes(8, "little") + (256).to_bytes(2, "little"))
            self.uplink.inject(frame(self.adapter.functions()[k].nic.switch_mac() or OTHER, OTHER))

    @rule(k=st.integers(0, NUM_VFS), offset=st.integers(0, 0x3FF).map(lambda x: x * 4),
          width=st.sampled_from([1, 2, 4, 8]), value=st.integers(0, 2**64 - 1),
          config=st.booleans())
    def guest_access(self, k: int, offset: int, width: int, value: int, config: bool) -> None:
        fn = self.adapter.functions()[k]
        region = RegionIndex.CONFIG if config else RegionIndex.BAR0
        size = fn.regions()[region].size
        offset %= size - 8
        code = fn.pe.status().code
        gate_open = code in MMIO_OPEN and fn.exists and not fn.in_reset
        if not config:
            gate_open = gate_open and fn.config.memory_enabled
        data = fn.region_read(region, offset, width)
        if not gate_open:
            assert data == b"\xff" * width, (fn.name, code, region, offset)
        before = device_state(fn)
        if config and offset in (0x10, 0x14, 0x18, 0x1C, 0x20, 0x24):
            return  # keep BARs where they are: they don't matter here
        fn.region_write(region, offset, (value & ((1 << 8 * width) - 1)).to_bytes(width, "little"))
        if not gate_open:
            assert device_state(fn) == before, (fn.name, code, region, offset)

    @rule(k=st.integers(0, NUM_VFS), what=st.sampled_from(["flr", "soft", "device", "bme-off"]))
    def function_reset(self, k: int, what: str) -> None:
        d = self.drivers[k]
        if what == "flr":
            d.cfg_write(PCIE_CAP + 0x08, 0x8000, 2)
        elif what == "soft":
            d.write(R.CTRL, 1)
        elif what == "device":
            d.fn.device_reset()
        else:
            d.cfg_write(0x04, 0x2, 2)

    @rule(on=st.booleans())
    def vf_enable(self, on: bool) -> None:
        self.drivers[0].cfg_write(SRIOV_CAP + 0x08, 0b1001 if on else 0, 2)

    @rule(k=st.integers(0, NUM_VFS), attach=st.booleans())
    def attach_detach(self, k: int, attach: bool) -> None:
        fn = self.adapter.functions()[k]
        if attach:
            fn.attach(GateSpy(fn, self.ram, self.violations), SinkSpy(fn, self.violations))
        else:
            fn.detach()

    # ---- platform actions
    @rule(k=st.integers(0, NUM_VFS), code=st.integers(0, 19), now=st.booleans(),
          mask=st.sampled_from([0, 0xFFF]))
    def inject(self, k: int, code: int, now: bool, mask: int) -> None:
        self.adapter.inject(self._pe(k), code, address=0x40 if mask else 0, mask=mask, now=now)

    @rule(k=st.integers(1, NUM_VFS))
    def vf_error(self, k: int) -> None:
        self.adapter.inject_vf_error(k - 1)

    @rule()
    def adapter_fatal(self) -> None:
        self.adapter.inject_adapter_fatal()

    @rule(k=st.integers(0, NUM_VFS))
    def freeze(self, k: int) -> None:
        self._pe(k).freeze("test")

    @rule(k=st.integers(0, NUM_VFS), dma=st.booleans())
    def thaw(self, k: int, dma: bool) -> None:
        pe = self._pe(k)
        pe.thaw_dma() if dma else pe.thaw_mmio()

    @rule(k=st.integers(0, NUM_VFS), kind=st.sampled_from([1, 3]),
          step=st.sampled_from(["both", "activate", "deactivate"]))
    def pe_reset(self, k: int, kind: int, step: str) -> None:
        pe = self._pe(k)
        if step != "deactivate":
            pe.activate_reset(kind)
        if step != "activate":
            pe.deactivate_reset()

    @rule(dt=st.sampled_from([0.0, 0.05, 0.1, 0.3, 2.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    # ---- invariants
    @invariant()
    def gates_held(self) -> None:
        assert self.violations == []

    @invariant()
    def no_dma_outside_maps(self) -> None:
        assert self.ram.guards_intact()

    @invariant()
    def books_balance(self) -> None:
        for fn in self.adapter.functions():
            assert fn.nic.balanced, (fn.name, fn.nic.ledger, fn.nic.tx_pending)

    @invariant()
    def model_healthy(self) -> None:
        assert self.adapter.internal_errors == []
        for pe in self.adapter.pes:
            assert pe.status().code in (0, 1, 2, 4, 5)
        top = self.adapter.pes.adapter.status().code
        if top is not PeStateCode.NORMAL:  # no VF DMA while the adapter PE's DMA is off
            assert not any(pe.dma_open() for pe in self.adapter.pes.vfs)
        if top not in MMIO_OPEN:  # no VF MMIO either while its MMIO is off
            assert not any(pe.mmio_open() for pe in self.adapter.pes.vfs)


AdapterMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestAdapterMachine = AdapterMachine.TestCase

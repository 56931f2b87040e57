"""Helpers shared by the device model tests."""

from __future__ import annotations

from device_model import Adapter, AdapterConfig, ManualClock, QueueUplink, ResetTiming
from device_model.function import Function
from device_model.regs import Access, Field, Register, RegisterFile
from device_model.testkit import MiniDriver, PfDriver, RamGuest


def make_adapter(clock: ManualClock, uplink: QueueUplink | None = None, *, total_vfs: int = 4,
                 timing: ResetTiming = ResetTiming.FAST) -> Adapter:
    return Adapter(AdapterConfig(total_vfs=total_vfs, timing=timing), clock, uplink)


def check_clean(adapter: Adapter) -> None:
    assert adapter.internal_errors == []
    assert adapter.events.listener_errors == []
    for f in adapter.functions():
        assert f.nic.balanced, f.name


def bring_up(adapter: Adapter, guest: RamGuest,
             num_vfs: int = 2) -> tuple[PfDriver, list[MiniDriver]]:
    """PF up with rings and `num_vfs` VFs enabled, each VF up with rings."""
    pf = PfDriver(adapter.pf, guest)
    pf.enable()
    pf.setup_rings()
    pf.enable_vfs(num_vfs)
    pf.reset_done()
    vfs = []
    for i in range(num_vfs):
        d = MiniDriver(adapter.vf(i), guest)
        d.enable()
        d.setup_rings()
        vfs.append(d)
    return pf, vfs


def check_access_rules(fn: Function, region: int, regs: RegisterFile, r: Register) -> None:
    """Check every field of `r` through guest accesses to `region` of `fn`.

    RW fields take ones and zeros; RO and HW fields ignore writes; RW1C fields, once set by
    hardware, ignore 0s and clear on 1s; SC fields read 0 (their actions are tested apart).
    """

    def read() -> int:
        return int.from_bytes(fn.region_read(region, r.offset, r.size), "little")

    def write(value: int) -> None:
        raw = (value & ((1 << 8 * r.size) - 1)).to_bytes(r.size, "little")
        fn.region_write(region, r.offset, raw)

    def field(f: Field) -> int:
        return (read() & f.mask) >> f.lsb

    def ones(f: Field) -> int:
        return (1 << f.width) - 1

    assert fn.config_ok() if region == 7 else fn.mmio_ok(), f"{fn.name} does not answer"
    for f in r.fields:
        where = f"{fn.name}: {r.name}.{f.name}"
        safe = read() & ~r.sc_mask & ~r.w1c_mask  # never trigger actions or clear other bits
        if f.access is Access.RW:
            write(safe | f.mask)
            assert field(f) == ones(f), where
            write(read() & ~r.sc_mask & ~r.w1c_mask & ~f.mask)
            assert field(f) == 0, where
        elif f.access in (Access.RO, Access.HW):
            before = field(f)
            write(safe ^ f.mask)
            assert field(f) == before, where
        elif f.access is Access.RW1C:
            regs.set_bits(r.name, f.mask)
            assert field(f) == ones(f), where
            write(read() & ~r.sc_mask & ~r.w1c_mask)
            assert field(f) == ones(f), where
            write((read() & ~r.sc_mask & ~r.w1c_mask) | f.mask)
            assert field(f) == 0, where
        else:
            assert f.access is Access.SC
            assert field(f) == 0, where

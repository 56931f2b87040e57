"""ibm,errinjct functions 0-19 (armed and immediate), adapter fatal and VF-only errors."""

from __future__ import annotations

import pytest
from dm_helpers import bring_up

from device_model import (
    Adapter,
    ErrorFunction,
    ErrorSource,
    EventHistory,
    EventKind,
    PeStateCode,
    QueueUplink,
)
from device_model.errors import InjectionError, UnknownPeError
from device_model.inject import EFFECTS, Op
from device_model.nic import registers as R
from device_model.pci import ids
from device_model.pci.ids import AerUncorrectable as U
from device_model.pci.layouts import AER_CAP
from device_model.testkit import MiniDriver, RamGuest, frame

OTHER = bytes.fromhex("020000000099")
EXPECTED = {  # function -> (class of access, AER bit, PCI Status bits)
    **{f: (Op.MMIO_LOAD, U.ECRC, 0) for f in (0, 2)},
    **{f: (Op.MMIO_LOAD, U.POISONED_TLP, ids.STS_DETECTED_PARITY) for f in (1, 3)},
    4: (Op.CONFIG_LOAD, U.ECRC, 0), 5: (Op.CONFIG_LOAD, U.POISONED_TLP, ids.STS_DETECTED_PARITY),
    **{f: (Op.MMIO_STORE, U.ECRC, 0) for f in (6, 8)},
    **{f: (Op.MMIO_STORE, U.POISONED_TLP, ids.STS_DETECTED_PARITY) for f in (7, 9)},
    10: (Op.CONFIG_STORE, U.ECRC, 0),
    11: (Op.CONFIG_STORE, U.POISONED_TLP, ids.STS_DETECTED_PARITY),
}
for base, op in ((12, Op.DMA_READ), (16, Op.DMA_WRITE)):
    EXPECTED[base] = (op, U.ECRC, 0)
    EXPECTED[base + 1] = (op, U.POISONED_TLP,
                          ids.STS_DETECTED_PARITY | ids.STS_MASTER_DATA_PARITY)
    EXPECTED[base + 2] = (op, U.UNSUPPORTED_REQUEST, ids.STS_RCV_MASTER_ABORT)
    EXPECTED[base + 3] = (op, U.COMPLETER_ABORT, ids.STS_RCV_TARGET_ABORT)


def test_effects_table_matches_the_documented_one() -> None:
    assert len(EFFECTS) == 20
    for code, (op, bit, status) in EXPECTED.items():
        e = EFFECTS[ErrorFunction(code)]
        assert (e.op, e.aer_bit, e.status_bits) == (op, bit, status), code


def access(op: Op, d: MiniDriver, uplink: QueueUplink) -> None:
    """Do one access of class `op` on the driver's function, and check it failed."""
    fn = d.fn
    if op is Op.MMIO_LOAD:
        assert d.read(R.MTU) == 0xFFFFFFFF
    elif op is Op.MMIO_STORE:
        d.write(R.MTU, 1000)
        assert fn.bar0.stored("MTU") == R.MTU_DEFAULT  # type: ignore[attr-defined]
    elif op is Op.CONFIG_LOAD:
        assert d.cfg_read(0x00) == 0xFFFFFFFF
    elif op is Op.CONFIG_STORE:
        d.cfg_write(0x3C, 0x5A, 1)
        assert fn.config.stored("int_line") == 0  # type: ignore[attr-defined]
    elif op is Op.DMA_READ:
        d.post_tx([frame(OTHER, d.mac())])  # the descriptor fetch is the first DMA read
        led = fn.nic.ledger  # type: ignore[attr-defined]
        assert led.tx_dropped == 1 and led.tx_sent == 0 and uplink.take() == []
    else:
        uplink.inject(frame(d.mac(), OTHER))  # the buffer write is the first DMA write
        led = fn.nic.ledger  # type: ignore[attr-defined]
        assert led.rx_errors == 1 and led.rx_delivered == 0 and d.received() == []


@pytest.mark.parametrize("target", ["adapter", "vf"])
@pytest.mark.parametrize("code", range(20))
def test_armed_injection_fires_on_next_matching_access(adapter: Adapter, guest: RamGuest,
                                                       uplink: QueueUplink,
                                                       history: EventHistory, code: int,
                                                       target: str) -> None:
    pf, (v0, _) = bring_up(adapter, guest)
    d = pf if target == "adapter" else v0
    fn = adapter.pf if target == "adapter" else adapter.vf(0)
    pe = fn.pe
    op, bit, status_bits = EXPECTED[code]
    history.clear()
    inj = adapter.inject(pe.address, code)
    assert adapter.injector.armed == [inj] and history.kinds() == [EventKind.INJECTION_ARMED]
    # an access of another class, or by a function of another PE, does not fire it
    if op is Op.CONFIG_LOAD:
        d.read(R.MTU)
    else:
        d.cfg_read(0x00)
    (v0 if target == "adapter" else pf).read(R.MTU)
    assert adapter.injector.armed == [inj] and pe.status().code is PeStateCode.NORMAL
    history.clear()
    access(op, d, uplink)
    assert adapter.injector.armed == []
    assert fn.config.stored("aer.uncor_status") == bit
    assert fn.config.stored("status") & 0xF900 == status_bits
    devsta = fn.config.stored("pcie.devsta")
    assert devsta & ids.DEVSTA_NFED and not devsta & ids.DEVSTA_FED  # all non-fatal by default
    assert bool(devsta & ids.DEVSTA_URD) == (bit == U.UNSUPPORTED_REQUEST)
    entry = pe.error_log()[-1]
    assert (entry.source, entry.error_function, entry.aer_bit, entry.fatal) == (
        ErrorSource.INJECTED, code, bit, False)
    frozen = [p for p in adapter.pes if p.status().code is PeStateCode.FROZEN]
    assert frozen == (list(adapter.pes) if target == "adapter" else [pe])
    kinds = history.kinds()
    assert kinds[:3] == [EventKind.INJECTION_FIRED, EventKind.ERROR_LOGGED, EventKind.PE_FROZEN]


@pytest.mark.parametrize("code", range(20))
def test_immediate_injection(adapter: Adapter, code: int) -> None:
    pe = adapter.pes.vf(1)
    inj = adapter.inject(pe, code, address=0x12345678_9ABCDEF0, now=True)
    fn = adapter.vf(1)
    assert adapter.injector.armed == [] and inj.function == code
    assert fn.config.stored("aer.uncor_status") == EXPECTED[code][1]
    assert fn.config.stored("aer.capctl") & 0x1F == EXPECTED[code][1].bit_length() - 1
    assert fn.config.stored("aer.header_log2") == 0x12345678
    assert fn.config.stored("aer.header_log3") == 0x9ABCDEF0
    assert pe.error_log()[-1].address == 0x12345678_9ABCDEF0
    assert pe.status().code is PeStateCode.FROZEN
    assert adapter.pes.adapter.status().code is PeStateCode.NORMAL
    assert adapter.pf.bar0.stored("VF_ERR") == 1 << 1


def test_address_and_mask_matching(adapter: Adapter, guest: RamGuest) -> None:
    pf, _ = bring_up(adapter, guest)
    pf.cfg_write(0x10, 0xFE000000)  # BAR0 at 0xfe000000
    adapter.inject(adapter.pes.adapter, 0, address=0xFE000000 + R.MTU, mask=(1 << 64) - 1)
    assert pf.read(R.CTRL) != 0xFFFFFFFF  # another address: no match
    assert pf.read(R.MTU) == 0xFFFFFFFF and adapter.pes.adapter.frozen
    adapter.pes.adapter.thaw_mmio()
    adapter.pes.adapter.thaw_dma()
    adapter.inject(adapter.pes.adapter, 4, address=0x3C, mask=0xFFF)
    assert pf.cfg_read(0x00, 2) == adapter.config.vendor_id
    assert pf.cfg_read(0x3C, 1) == 0xFF and adapter.pes.adapter.frozen


def test_severity_first_error_and_masking(adapter: Adapter, guest: RamGuest) -> None:
    pf, _ = bring_up(adapter, guest, num_vfs=0)
    pf.cfg_write(AER_CAP + 0x0C, ids.AER_UNCOR_SEVERITY_DEFAULT | U.POISONED_TLP)
    adapter.inject(adapter.pes.adapter, 0, address=0x1000, now=True)  # ECRC, non-fatal
    e = adapter.inject(adapter.pes.adapter, 1, address=0x2000, now=True)  # poisoned: fatal now
    cfg = adapter.pf.config
    assert cfg.stored("aer.uncor_status") == U.ECRC | U.POISONED_TLP
    assert cfg.field("aer.capctl", "first_error") == 19  # the first one stays the first
    assert cfg.stored("aer.header_log3") == 0x1000
    assert cfg.stored("pcie.devsta") & (ids.DEVSTA_NFED | ids.DEVSTA_FED) == 0b110
    assert adapter.pes.adapter.error_log()[-1].fatal and e.function == 1


def test_adapter_fatal_error(adapter: Adapter, guest: RamGuest, history: EventHistory) -> None:
    pf, _ = bring_up(adapter, guest)
    history.clear()
    entry = adapter.inject_adapter_fatal("boom")
    assert entry.source is ErrorSource.ADAPTER_FATAL and entry.fatal  # internal: fatal severity
    cfg = adapter.pf.config
    assert cfg.stored("aer.uncor_status") == U.INTERNAL
    assert cfg.field("aer.capctl", "first_error") == 0  # masked by default: not logged as first
    assert cfg.stored("pcie.devsta") & ids.DEVSTA_FED
    assert all(pe.status().code is PeStateCode.FROZEN for pe in adapter.pes)
    assert adapter.pf.bar0.stored("ADAPTER_ERR") & 1 and adapter.failed
    assert pf.irqs.fired[-1:] != [(2, R.Vector.ERROR)]  # frozen: no interrupt
    adapter.pes.adapter.reset(1)
    assert not adapter.failed and adapter.switch.enabled


def test_vf_only_error(adapter: Adapter, guest: RamGuest) -> None:
    pf, _ = bring_up(adapter, guest)
    pf.irqs.fired.clear()
    adapter.inject_vf_error(1)
    assert [pe.status().code for pe in adapter.pes][:3] == [0, 0, 2]
    assert pf.read(R.VF_ERR, 8) == 0b10 and pf.read(R.ADAPTER_ERR) & 0b100
    assert pf.irqs.fired == [(2, R.Vector.ERROR)]
    assert adapter.vf(1).config.stored("aer.uncor_status") == U.INTERNAL


def test_bad_requests_and_cancel(adapter: Adapter, history: EventHistory) -> None:
    with pytest.raises(InjectionError):
        adapter.inject(adapter.pes.adapter, 20)
    with pytest.raises(InjectionError):
        adapter.inject(adapter.pes.adapter, -1)
    with pytest.raises(InjectionError):
        adapter.inject(adapter.pes.adapter, 0, address=1 << 64)
    with pytest.raises(UnknownPeError):
        adapter.inject(0xBAD, 0)
    adapter.inject(adapter.pes.adapter, 0)
    adapter.inject(adapter.pes.adapter, 12)
    keep = adapter.inject(adapter.pes.vf(0), 0)
    assert adapter.injector.cancel(adapter.pes.adapter.address) == 2
    assert adapter.injector.armed == [keep]
    assert len(history.of(EventKind.INJECTION_CANCELLED)) == 2

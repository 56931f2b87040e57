"""RX drops for want of a free descriptor (an overrun: the driver did not harvest its ring)
are counted apart, `rx_no_desc`, as part of rx_missed; the other misses are not."""

from __future__ import annotations

from device_model import Adapter, QueueUplink
from device_model.nic import registers as R
from device_model.testkit import MiniDriver, PfDriver, frame

Up = tuple[PfDriver, list[MiniDriver]]
OTHER = bytes.fromhex("020000000099")


def test_a_full_ring_drops_and_counts_no_desc(adapter: Adapter, uplink: QueueUplink,
                                             up: Up) -> None:
    _, (v0, _) = up
    for _ in range(v0.rx_count + 7):  # one slot stays empty: count - 1 fit, then 8 drop
        uplink.inject(frame(v0.mac(), OTHER))
    led = adapter.vf(0).nic.ledger
    assert (led.rx_delivered, led.rx_no_desc, led.rx_missed) == (v0.rx_count - 1, 8, 8)
    assert adapter.vf(0).nic.balanced
    assert len(v0.received()) == v0.rx_count - 1  # harvested and given back: room again
    uplink.inject(frame(v0.mac(), OTHER))
    assert (led.rx_delivered, led.rx_no_desc) == (v0.rx_count, 8)


def test_a_frozen_functions_drop_is_missed_not_no_desc(adapter: Adapter, uplink: QueueUplink,
                                                      up: Up) -> None:
    _, (v0, _) = up
    for _ in range(v0.rx_count - 1):  # the ring full too: the freeze decides first
        uplink.inject(frame(v0.mac(), OTHER))
    adapter.pes.vf(0).freeze("test")
    uplink.inject(frame(v0.mac(), OTHER))
    led = adapter.vf(0).nic.ledger
    assert (led.rx_missed, led.rx_no_desc) == (1, 0)
    assert adapter.vf(0).nic.balanced


def test_an_unusable_ring_is_not_an_overrun(adapter: Adapter, uplink: QueueUplink,
                                            up: Up) -> None:
    """RX_LEN out of range: no ring at all, a driver's setup fault, not a full ring."""
    _, (v0, _) = up
    v0.write(R.RX_LEN, 0)
    uplink.inject(frame(v0.mac(), OTHER))
    led = adapter.vf(0).nic.ledger
    assert (led.rx_missed, led.rx_no_desc) == (1, 0)

"""Every command, well-formed, through the real client and server over a unix socket."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from vfio_user_fakes import (
    REG_DMA_READ,
    REG_DMA_STATUS,
    REG_DMA_WRITE,
    REG_INTX,
    REG_MSIX,
    SIZES,
    Rig,
)

from vfio_user import Client, GuestRam, ServerConfig
from vfio_user import codec as c
from vfio_user.contract import IrqFlag, IrqIndex, RegionFlag

MB = 1 << 20


@pytest.fixture
def memfd() -> Iterator[tuple[int, mmap.mmap]]:
    """4 MiB of 'guest RAM' and the client's own view of it."""
    fd = os.memfd_create("guest-ram", os.MFD_CLOEXEC)
    os.ftruncate(fd, 4 * MB)
    view = mmap.mmap(fd, 4 * MB)
    yield fd, view
    view.close()
    os.close(fd)


def _dma_write(client: Client, addr: int, length: int, value: int) -> int:
    client.region_write(0, REG_DMA_WRITE, struct.pack("<QIB3x", addr, length, value))
    return int.from_bytes(client.region_read(0, REG_DMA_STATUS, 4), "little")


def _dma_read(client: Client, addr: int, length: int) -> int:
    client.region_write(0, REG_DMA_READ, struct.pack("<QI4x", addr, length))
    return int.from_bytes(client.region_read(0, REG_DMA_STATUS, 4), "little")


def _fire_msix(client: Client, vector: int) -> None:
    client.region_write(0, REG_MSIX, struct.pack("<I", vector))


# ------------------------------------------------------------------ VERSION


def test_version_offers_server_limits(client: Client) -> None:
    caps = client.server_caps
    assert client.server_version == (0, 0)
    assert (caps.max_msg_fds, caps.max_data_xfer_size, caps.pgsizes, caps.max_dma_maps) == \
        (16, MB, 4096, 65535)
    assert caps.write_multiple
    assert "migration" not in caps.present


def test_version_reply_never_longer_than_request(rig: Rig) -> None:
    with Client(rig.path) as cl:
        cl.connect()
        small = c.Capabilities(present=frozenset({"max_msg_fds", "max_data_xfer_size"}))
        payload = c.encode_version(0, 0, small.to_json())
        reply = cl.request(c.Command.VERSION, payload)
        assert len(reply) <= len(payload)
        _, caps = c.decode_version(reply)
        assert caps.present <= {"max_msg_fds", "max_data_xfer_size"}
        assert caps.max_msg_fds == 16


def test_version_without_json_gets_bare_reply(rig: Rig) -> None:
    with Client(rig.path) as cl:
        cl.connect()
        reply = cl.request(c.Command.VERSION, c.encode_version(0, 0))
        assert reply == c.encode_version(0, 0)
        assert cl.device_info().num_regions == 9  # negotiated: commands work


def test_version_minor_is_capped(rig: Rig) -> None:
    with Client(rig.path) as cl:
        cl.connect()
        reply = cl.request(c.Command.VERSION, c.encode_version(0, 7, c.Capabilities(
            present=frozenset({"pgsizes"})).to_json()))
        assert c.decode_version(reply)[0] == c.Version(0, 0)


def test_write_multiple_only_when_the_client_offers_it(rig: Rig) -> None:
    with Client(rig.path) as cl:
        cl.connect()
        cl.negotiate(c.Capabilities(present=frozenset({"max_msg_fds", "write_multiple"})))
        assert not cl.server_caps.write_multiple


# ------------------------------------------------------------------ info


def test_device_info(client: Client) -> None:
    info = client.device_info()
    assert info == c.DeviceInfo(16, c.DeviceFlag.RESET | c.DeviceFlag.PCI, 9, 5)


def test_region_info_never_offers_mmap(client: Client) -> None:
    for index in range(9):
        info = client.region_info(index)
        assert info.index == index
        assert info.size == SIZES.get(index, 0)
        assert not info.flags & RegionFlag.MMAP
    assert client.region_info(2).flags == RegionFlag.READ | RegionFlag.WRITE
    assert client.region_info(4).flags == RegionFlag.READ


def test_region_info_larger_argsz_gets_exact_argsz(client: Client) -> None:
    body = client.request(c.Command.DEVICE_GET_REGION_INFO,
                          c.RegionInfo(200, 0, 0, 0, 0, 0).pack())
    r = c.RegionInfo.unpack(body)
    assert len(body) == 32 and r.argsz == 32 and r.size == 0x1000


def test_irq_info(client: Client) -> None:
    assert client.irq_info(IrqIndex.MSIX).count == 8
    assert client.irq_info(IrqIndex.MSIX).flags == IrqFlag.EVENTFD | IrqFlag.NORESIZE
    assert client.irq_info(IrqIndex.INTX).count == 1
    assert [client.irq_info(i).count for i in (1, 3, 4)] == [0, 0, 0]


# ------------------------------------------------------------------ regions


def test_region_write_then_read(rig: Rig, client: Client) -> None:
    client.region_write(7, 0x40, b"\x01\x02\x03\x04")
    assert client.region_read(7, 0x40, 4) == b"\x01\x02\x03\x04"
    assert client.region_read(7, 0x3E, 8) == b"\0\0\x01\x02\x03\x04\0\0"
    assert rig.fake.storage[7][0x40:0x44] == b"\x01\x02\x03\x04"


def test_posted_write_is_not_answered_and_ordered_before_a_read(rig: Rig,
                                                                client: Client) -> None:
    for i in range(50):
        client.region_write(2, 4 * i, struct.pack("<I", i), posted=True)
    assert client.region_read(2, 4 * 49, 4) == struct.pack("<I", 49)
    assert rig.endpoint.connection is not None
    stats = rig.call(lambda: rig.endpoint.connection.session.stats)  # type: ignore[union-attr]
    assert stats.posted == 50 and stats.posted_errors == 0


def test_large_region_read_and_write(client: Client) -> None:
    data = os.urandom(0x4000)
    client.region_write(2, 0, data)
    assert client.region_read(2, 0, 0x4000) == data


def test_write_multi(rig: Rig, client: Client) -> None:
    client.region_write_multi([(2, 0, b"\xaa" * 8), (2, 8, b"\xbb"), (7, 0x80, b"\x11\x22")])
    assert client.region_read(2, 0, 9) == b"\xaa" * 8 + b"\xbb"
    assert client.region_read(7, 0x80, 2) == b"\x11\x22"
    assert ("write", 2, 8, b"\xbb") in rig.fake.history


def test_device_reset_calls_the_function(rig: Rig, client: Client) -> None:
    client.region_write(0, 0, b"\xff\xff\xff\xff")
    client.reset()
    assert rig.fake.resets == 1
    assert client.region_read(0, 0, 4) == bytes(4)


# ------------------------------------------------------------------ DMA


def test_dma_through_a_mapped_memfd(client: Client, memfd: tuple[int, mmap.mmap]) -> None:
    fd, view = memfd
    client.map_dma(0x100000, 2 * MB, fd, offset=0x100000)
    assert _dma_write(client, 0x180000, 64, 0x5A) == 0
    assert view[0x180000:0x180040] == b"\x5a" * 64
    view[0x200000:0x200010] = b"from the guest.."
    assert _dma_read(client, 0x200000, 16) == 0
    assert client.region_read(2, 0, 16) == b"from the guest.."


def test_guest_ram_helper(client: Client) -> None:
    with GuestRam(MB) as ram:
        client.map_ram(ram, addr=0x80000000)
        ram.write(0x100, b"ring")
        assert _dma_read(client, 0x80000100, 4) == 0
        assert client.region_read(2, 0, 4) == b"ring"
        assert _dma_write(client, 0x80000200, 3, 0x42) == 0
        assert ram.read(0x200, 4) == b"\x42\x42\x42\0"
        with pytest.raises(ValueError):
            ram.read(MB - 2, 4)
        client.unmap_dma(0x80000000, MB)


def test_dma_map_with_unaligned_fd_offset(client: Client, memfd: tuple[int, mmap.mmap]) -> None:
    fd, view = memfd
    client.map_dma(0x40000000, 0x3000, fd, offset=0x1800)
    assert _dma_write(client, 0x40000000, 4, 0x77) == 0
    assert view[0x1800:0x1804] == b"\x77" * 4
    assert view[0x17FF] == 0


def test_dma_outside_maps_and_into_fdless_map_fails(rig: Rig, client: Client,
                                                    memfd: tuple[int, mmap.mmap]) -> None:
    fd, _ = memfd
    client.map_dma(0, MB, fd)
    client.map_dma(0xFFFC0000, 0x40000)  # like QEMU's BIOS range: no fd, still a success
    assert _dma_write(client, MB - 8, 16, 1) == 1  # runs past the end of the map
    assert _dma_write(client, 0xFFFC0000, 4, 1) == 1  # no fd: nothing to DMA into
    assert _dma_write(client, 0, 4, 1) == 0
    assert len(rig.fake.dma_errors) == 2


def test_read_only_map_refuses_device_writes(client: Client,
                                             memfd: tuple[int, mmap.mmap]) -> None:
    fd, _ = memfd
    client.map_dma(0, MB, fd, writable=False)
    assert _dma_write(client, 0, 4, 1) == 1
    assert _dma_read(client, 0, 4) == 0


def test_unmap_and_unmap_all(rig: Rig, client: Client, memfd: tuple[int, mmap.mmap]) -> None:
    fd, _ = memfd
    client.map_dma(0, MB, fd)
    client.map_dma(MB, MB, fd, offset=MB)
    client.unmap_dma(0, MB)
    assert _dma_write(client, 0, 4, 1) == 1
    assert _dma_write(client, MB, 4, 1) == 0
    client.map_dma(0, MB, fd)  # the range is free again
    client.unmap_all_dma()
    assert rig.call(lambda: len(rig.fake.memory or [])) == 0
    assert _dma_write(client, MB, 4, 1) == 1


def test_unmap_reply_echoes_the_request(client: Client, memfd: tuple[int, mmap.mmap]) -> None:
    fd, _ = memfd
    client.map_dma(0x2000, 0x1000, fd)
    body = client.request(c.Command.DMA_UNMAP, c.DmaUnmap(24, 0, 0x2000, 0x1000).pack())
    assert c.DmaUnmap.unpack(body) == c.DmaUnmap(24, 0, 0x2000, 0x1000)


# ------------------------------------------------------------------ interrupts


def test_msix_eventfds_deliver_the_right_vector(client: Client) -> None:
    client.enable_msix(8)
    _fire_msix(client, 3)
    assert client.wait_irq(IrqIndex.MSIX, 3, timeout=2.0) == 1
    assert client.wait_irq(IrqIndex.MSIX, 2, timeout=0.0) == 0
    _fire_msix(client, 3)
    _fire_msix(client, 3)
    assert client.wait_irq(IrqIndex.MSIX, 3, timeout=2.0) == 2


def test_eventfds_arrive_in_chunks_of_max_msg_fds(sock_dir: Path) -> None:
    rig = Rig(sock_dir, ServerConfig(max_msg_fds=3))
    try:
        with rig.client() as cl:
            assert cl.server_caps.max_msg_fds == 3
            cl.enable_msix(8)  # 3 + 3 + 2 fds
            assert rig.call(lambda: len(rig.endpoint.connection.session.irqs)) == 8  # type: ignore[union-attr]
            stats = rig.call(lambda: rig.endpoint.connection.session.stats)  # type: ignore[union-attr]
            assert stats.messages == 4  # VERSION + 3 SET_IRQS
            _fire_msix(cl, 7)
            assert cl.wait_irq(IrqIndex.MSIX, 7, timeout=2.0) == 1
    finally:
        rig.thread.stop()


def test_deassign_with_count_and_no_fds(rig: Rig, client: Client) -> None:
    client.enable_msix(8)
    client.set_eventfds(IrqIndex.MSIX, 2, [None, None])
    assert rig.call(lambda: len(rig.endpoint.connection.session.irqs)) == 6  # type: ignore[union-attr]
    _fire_msix(client, 2)
    _fire_msix(client, 4)
    assert client.wait_irq(IrqIndex.MSIX, 4, timeout=2.0) == 1
    assert client.wait_irq(IrqIndex.MSIX, 2, timeout=0.05) == 0


def test_disable_all_of_an_index(rig: Rig, client: Client) -> None:
    client.enable_msix(8)
    client.disable_irqs(IrqIndex.MSIX)
    assert rig.call(lambda: len(rig.endpoint.connection.session.irqs)) == 0  # type: ignore[union-attr]


def test_masked_vector_is_latched_and_delivered_on_unmask(client: Client) -> None:
    client.enable_msix(8)
    mask = c.IrqSetFlag.DATA_NONE | c.IrqSetFlag.ACTION_MASK
    unmask = c.IrqSetFlag.DATA_NONE | c.IrqSetFlag.ACTION_UNMASK
    client.set_irqs(IrqIndex.MSIX, 1, 1, mask)
    _fire_msix(client, 1)
    _fire_msix(client, 1)
    assert client.wait_irq(IrqIndex.MSIX, 1, timeout=0.05) == 0
    client.set_irqs(IrqIndex.MSIX, 1, 1, unmask)
    assert client.wait_irq(IrqIndex.MSIX, 1, timeout=2.0) == 1  # one pending bit
    _fire_msix(client, 1)
    assert client.wait_irq(IrqIndex.MSIX, 1, timeout=2.0) == 1


def test_client_triggers_with_bool_and_none_data(client: Client) -> None:
    client.enable_msix(4)
    trigger_bool = c.IrqSetFlag.DATA_BOOL | c.IrqSetFlag.ACTION_TRIGGER
    client.set_irqs(IrqIndex.MSIX, 0, 4, trigger_bool, bools=b"\x00\x01\x00\x01")
    assert [client.wait_irq(IrqIndex.MSIX, v, timeout=0.5 if v % 2 else 0.0)
            for v in range(4)] == [0, 1, 0, 1]
    client.set_irqs(IrqIndex.MSIX, 2, 1, c.IrqSetFlag.DATA_NONE | c.IrqSetFlag.ACTION_TRIGGER)
    assert client.wait_irq(IrqIndex.MSIX, 2, timeout=2.0) == 1


def test_intx(client: Client) -> None:
    client.enable_irqs(IrqIndex.INTX, 1)
    client.region_write(0, REG_INTX, b"\1\0\0\0")
    assert client.wait_irq(IrqIndex.INTX, 0, timeout=2.0) == 1


def test_eventfds_survive_device_reset(client: Client) -> None:
    client.enable_msix(8)
    client.reset()
    _fire_msix(client, 5)
    assert client.wait_irq(IrqIndex.MSIX, 5, timeout=2.0) == 1

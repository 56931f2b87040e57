"""Connect, disconnect, reconnect; no fd leaks; the protocol core stepped by hand."""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import struct
import threading
from pathlib import Path

import pytest
from vfio_user_fakes import REG_DMA_STATUS, REG_DMA_WRITE, REG_MSIX, FakeFunction, Rig, open_fds

from vfio_user import (
    Client,
    ConnectionClosed,
    EndpointState,
    ServerConfig,
    Session,
    SessionState,
    serve,
)
from vfio_user import codec as c
from vfio_user.contract import IrqIndex
from vfio_user.framing import Frame

MB = 1 << 20


def _busy_client_session(cl: Client, fd: int) -> None:
    """Maps (with and without fd), eventfds, accesses: everything a session holds."""
    cl.map_dma(0, 2 * MB, fd)
    cl.map_dma(4 * MB, MB, fd, offset=0x1800)
    cl.map_dma(0xFFFC0000, 0x40000)
    cl.enable_msix(8)
    cl.enable_irqs(IrqIndex.INTX, 1)
    cl.region_write(0, REG_MSIX, struct.pack("<I", 1))
    assert cl.wait_irq(IrqIndex.MSIX, 1, timeout=2.0) == 1
    cl.region_write(0, 0x10, b"\x42\0\0\0")


def test_disconnect_cleans_up_and_reconnect_works(rig: Rig) -> None:
    fd = os.memfd_create("ram", os.MFD_CLOEXEC)
    os.ftruncate(fd, 8 * MB)
    try:
        with rig.client() as cl:
            _busy_client_session(cl, fd)
            session = rig.endpoint.connection.session  # type: ignore[union-attr]
            assert len(session.dma) == 3 and len(session.irqs) == 9
        rig.wait_listening()
        assert session.state is SessionState.CLOSED
        assert len(session.dma) == 0 and len(session.irqs) == 0 and len(session.memory) == 0
        assert rig.fake.history.count(("attach",)) == 1
        assert rig.fake.history[-1] == ("detach",)
        assert rig.fake.memory is None  # detached: no DMA space, no sink
        with rig.client() as again:
            assert again.region_read(0, 0x10, 4) == b"\x42\0\0\0"  # device state kept
            again.map_dma(0, 2 * MB, fd)  # fresh DMA space: same range maps again
            again.region_write(0, REG_DMA_WRITE, struct.pack("<QIB3x", 0x100, 4, 7))
            assert again.region_read(0, REG_DMA_STATUS, 4) == bytes(4)
        rig.wait_listening()
        assert [e.kind for e in rig.endpoint.history] == [
            "listening", "connected", "disconnected", "connected", "disconnected"]
        assert rig.endpoint.connections == 2
    finally:
        os.close(fd)


def test_no_fd_leaks(rig: Rig) -> None:
    before = open_fds()
    fd = os.memfd_create("ram", os.MFD_CLOEXEC)
    os.ftruncate(fd, 8 * MB)
    for _ in range(3):
        with rig.client() as cl:
            _busy_client_session(cl, fd)
            cl.enable_msix(8)  # replaces all eventfds: the old ones are closed
            cl.set_eventfds(IrqIndex.MSIX, 0, [None] * 4)
            cl.unmap_dma(0, 2 * MB)
            extra = [os.eventfd(0) for _ in range(20)]
            cl.send_raw(c.pack_message(1, c.Command.DEVICE_RESET, 0), extra[:3])
            assert cl.recv_message()[0].error == errno.EINVAL
            for e in extra:
                os.close(e)
        rig.wait_listening()
    os.close(fd)
    assert open_fds() == before


def test_second_client_is_refused_while_one_is_connected(rig: Rig) -> None:
    with rig.client() as first:
        with pytest.raises(ConnectionClosed):
            rig.client()
        assert first.device_info().num_regions == 9
    rig.wait_listening()
    kinds = [e.kind for e in rig.endpoint.history]
    assert kinds == ["listening", "connected", "refused-busy", "disconnected"]


def test_server_stop_closes_clients_and_removes_sockets(sock_dir: Path) -> None:
    rig = Rig(sock_dir)
    cl = rig.client()
    rig.thread.stop()
    assert not rig.path.exists()
    assert rig.fake.history[-1] == ("detach",)
    with pytest.raises(ConnectionClosed):
        cl.device_info()
    cl.close()


def test_serve_many_functions_on_one_loop(sock_dir: Path) -> None:
    fakes = {f"vf{i}": FakeFunction(f"vf{i}") for i in range(4)}
    stale = sock_dir / "vf2.sock"
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))  # a stale socket of an earlier run is replaced
    s.close()
    results: list[bytes] = []

    async def main() -> None:
        server = await serve(fakes, sock_dir)
        try:
            def clients() -> None:
                for name, path in server.paths.items():
                    with Client.open(path) as cl:
                        cl.region_write(7, 0, name.encode().ljust(4, b"\0"))
                        results.append(cl.region_read(7, 0, 4))

            t = threading.Thread(target=clients)
            t.start()
            while t.is_alive():
                await asyncio.sleep(0.01)
        finally:
            await server.stop()

    asyncio.run(main())
    assert results == [b"vf0\0", b"vf1\0", b"vf2\0", b"vf3\0"]
    assert {bytes(f.storage[7][:3]) for f in fakes.values()} == {b"vf0", b"vf1", b"vf2",
                                                                 b"vf3"}
    assert not any(sock_dir.iterdir())


def test_refuses_a_path_that_is_not_a_socket(sock_dir: Path) -> None:
    (sock_dir / "f0.sock").write_text("precious")
    with pytest.raises(FileExistsError):
        Rig(sock_dir)
    assert (sock_dir / "f0.sock").read_text() == "precious"


def test_config_is_checked_against_qemu_limits() -> None:
    for bad in (dict(max_msg_fds=17), dict(max_msg_fds=0), dict(max_data_xfer_size=65 * MB),
                dict(pgsizes=4096 + 512), dict(pgsizes=0), dict(max_dma_maps=65536)):
        with pytest.raises(ValueError):
            ServerConfig(**bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the core, by hand


def _frame(msg_id: int, command: int, payload: bytes = b"", fds: list[int] | None = None,
           flags: int = 0) -> Frame:
    return Frame(c.Header(msg_id, command, 16 + len(payload), flags, 0), payload,
                 list(fds or []))


def test_session_steps_one_message_at_a_time() -> None:
    fake = FakeFunction()
    s = Session(fake, ServerConfig())
    assert fake.history == [("attach",)]
    reply = s.process(_frame(1, c.Command.DEVICE_GET_INFO, c.DeviceInfo(16, 0, 0, 0).pack()))
    assert reply == c.pack_error(c.Header(1, 4, 32, 0, 0), errno.EINVAL)  # no VERSION yet
    reply = s.process(_frame(2, c.Command.VERSION, c.encode_version(0, 0)))
    assert reply == c.pack_message(2, c.Command.VERSION, 1, c.encode_version(0, 0))
    assert s.state is SessionState.READY
    fd = os.memfd_create("ram")
    os.ftruncate(fd, MB)
    view = mmap.mmap(fd, MB)
    before = open_fds()
    sent = os.dup(fd)  # a frame's fds belong to the session: it closes this one
    reply = s.process(_frame(3, c.Command.DMA_MAP, c.DmaMap(32, 3, 0, 0, MB).pack(), [sent]))
    assert reply == c.pack_message(3, c.Command.DMA_MAP, 1)
    assert open_fds() == before + 1  # the map's own mmap fd (the received one was closed)
    evs = [os.eventfd(0) for _ in range(2)]
    s.memory.write(0x10, b"hello")
    assert view[0x10:0x15] == b"hello"
    irq = c.IrqSet(20, c.IrqSetFlag.DATA_EVENTFD | c.IrqSetFlag.ACTION_TRIGGER, 2, 0, 2)
    assert s.process(_frame(4, c.Command.DEVICE_SET_IRQS, irq.pack(), evs)) is not None
    assert s.irqs.eventfd(2, 1) == evs[1]
    fake.sink.trigger(2, 1)  # type: ignore[union-attr]
    assert os.eventfd_read(evs[1]) == 1
    assert s.process(_frame(5, c.Command.REGION_WRITE,
                            c.RegionAccess(0, 2, 1).pack() + b"\1", flags=0x10)) is None
    s.close()
    assert fake.history[-1] == ("detach",)
    assert open_fds() == before  # eventfds (now the session's) and the mmap closed
    view.close()
    os.close(fd)


def test_session_refuses_a_function_with_wrong_regions() -> None:
    class Short(FakeFunction):
        def regions(self):  # type: ignore[no-untyped-def]
            return super().regions()[:7]

    with pytest.raises(ValueError):
        Session(Short(), ServerConfig())


def test_endpoint_state_enum(rig: Rig) -> None:
    assert rig.call(lambda: rig.endpoint.state) is EndpointState.LISTENING
    with rig.client():
        assert rig.call(lambda: rig.endpoint.state) is EndpointState.CONNECTED
    rig.wait_listening()

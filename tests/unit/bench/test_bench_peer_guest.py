"""bench.peer_guest finds the igb PF by its MAC while udev renames interfaces: an
interface gone between the directory's listing and the read of its address is skipped,
not an error (make bench's peer set-up failed on it: eth0 renamed to enp1s0)."""

from __future__ import annotations

from pathlib import Path

from bench.peer_guest import find_pf

MAC = "02:ee:00:00:02:00"


def _iface(net: Path, name: str, mac: str | None) -> Path:
    d = net / name
    d.mkdir(parents=True)
    if mac is not None:
        (d / "address").write_text(mac + "\n")
    return d


def test_an_interface_renamed_while_listed_is_skipped(tmp_path: Path) -> None:
    net = tmp_path / "net"
    _iface(net, "eth0", None)  # listed, then renamed: its address is gone
    _iface(net, "lo", "00:00:00:00:00:00")
    assert find_pf(MAC, net) is None
    (_iface(net, "enp1s0", MAC) / "device").mkdir()
    found = find_pf(MAC, net)
    assert found is not None and found[0] == "enp1s0"
    assert found[1] == (net / "enp1s0" / "device").resolve()

"""My driver binds in a real guest next to eeh-sriov's adapter driver."""

import pytest


@pytest.mark.eeh_topology("topology.toml")  # relative to this file
@pytest.mark.eeh_guest_command("python3 -m my_driver --greeting hello", guest="g1")
def test_my_driver_binds_next_to_the_adapter_driver(eeh_system, eeh_timeline):
    eeh_system.wait_drivers_ready(timeout=120)  # svc's adapter driver and my driver
    probes = {e.pe: e.data for e in eeh_timeline.entries
              if e.source == "driver" and e.kind == "probe"}
    mine = probes["vf0"]
    assert (mine["driver"], mine["guest"], mine["greeting"]) == ("my_driver", "g1", "hello")
    assert mine["cwd"] == "/mnt/test"  # this directory, read-only in the guest
    assert probes["adapter"]["driver"] != "my_driver"  # svc runs the default command

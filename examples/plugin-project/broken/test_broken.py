"""A broken variant: g1's command names a module this directory does not have."""

import pytest


@pytest.mark.eeh_topology("../tests/topology.toml")  # relative to this file
@pytest.mark.eeh_guest_command({"g1": "python3 -m my_driver --greeting hello"})
def test_my_driver_that_is_not_there(eeh_system):
    eeh_system.wait_drivers_ready(timeout=120)

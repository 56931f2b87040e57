"""The campaign's root exception (a `ShimError`: the CLI reports it as one line)."""

from __future__ import annotations

from hypervisor_shim.errors import ShimError


class CampaignError(ShimError):
    """A campaign could not be built, run or replayed as asked."""

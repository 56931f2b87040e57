"""The platform's QMP console (the real Console over the real platform) on its own loop
thread, as `eeh_sriov.system.System` runs it, for harness tests: it lives in
`eeh_sriov.campaign.console` (the fault campaigns use it too)."""

from __future__ import annotations

from eeh_sriov.campaign.console import ConsoleThread

__all__ = ["ConsoleThread"]

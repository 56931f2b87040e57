"""Small topologies the tests share, as TOML text (parse with eeh_sriov.topology)."""

from __future__ import annotations


def svc_and_g1(*, handlers: bool = True, timing: str | None = None,
               uplink: str | None = None) -> str:
    """Two VFs enabled; `svc` holds the PF and runs the adapter driver, `g1` holds vf0
    (its drivers with error handlers unless `handlers` is False)."""
    lines = ["[adapter]", "total_vfs = 2", "enabled_vfs = 2"]
    if timing is not None:
        lines.append(f'timing = "{timing}"')
    if uplink is not None:
        lines += ["[uplink]", f'kind = "{uplink}"']
    lines += ["[pf_driver]", 'where = "svc"',
              "[[guests]]", 'name = "svc"', 'functions = ["pf"]',
              "[[guests]]", 'name = "g1"', 'functions = ["vf0"]']
    if not handlers:
        lines.append("handlers = false")
    return "\n".join(lines) + "\n"

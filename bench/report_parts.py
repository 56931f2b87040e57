"""The tables and plot of results.md and docs/benchmarks.md that take a part as it is in
results.json: the cells (a distribution, a value, a goal's verdict), the JSON parts of the
registry (each one's figures and goals, and their rows in the main table), every goal
judged in a run, and bench.adapters' plot. `bench.report` lays out the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import goals, registry


def dstat(x: dict[str, Any] | None, key: str = "p50", scale: float = 1.0, digits: int = 0) -> str:
    if not x or not x.get("n"):
        return "-"
    v = x.get(key)
    return "-" if v is None else f"{v * scale:.{digits}f}"


def pair(x: dict[str, Any] | None, unit: str, scale: float = 1.0, digits: int = 0) -> str:
    if not x or not x.get("n"):
        return "-"
    return (f"{dstat(x, 'p50', scale, digits)} / {dstat(x, 'p99', scale, digits)} {unit} "
            f"(n={x['n']})")


def verdict(g: dict[str, Any] | None) -> str:
    if not g or g.get("value") is None:
        return "not measured"
    return "**met**" if g["met"] else "**missed**"


def figure_cell(f: dict[str, Any]) -> str:
    """A figure of results.json as a cell: a distribution's p50 / p99, or a value."""
    if "p50" in f or (f.get("n") == 0 and "value" not in f):
        return pair(f, f["unit"], 1, 1 if f.get("p50", 0) < 100 else 0)
    v = f.get("value")
    return f"{v:.3g} {f['unit']}" if isinstance(v, float) else f"{v} {f['unit']}"


def goal_text(name: str, g: dict[str, Any]) -> str:
    goal = goals.BY_NAME.get(name)
    return goal.text() if goal else f"{g['goal_is']} {g['goal']:g} {g['unit']}"


def json_rows(results: dict[str, Any]) -> list[str]:
    """The JSON parts' rows of the main table: each one's goals and `headline` figures
    (bench.registry), as they are in results.json."""
    lines = []
    for b in registry.json_parts():
        part = results.get(b.part)
        if not part:
            continue
        if "error" in part:
            lines.append(f"| `{b.module}` | failed: {part['error'][:120]} | - | - |")
            continue
        for name, g in (part.get("goals") or {}).items():
            value = "-" if g.get("value") is None else f"{g['value']:g} {g['unit']}"
            lines.append(f"| {g['what']} (`{b.module}`) | {value} | "
                         f"{goal_text(name, g)}: {verdict(g)} | - |")
        figures = part.get("figures") or {}
        for name in b.headline:
            if name in figures:
                f = figures[name]
                lines.append(f"| {f.get('what', name)} (`{b.module}`), p50 / p99 or value | "
                             f"{figure_cell(f)} | - | - |")
    return lines


def goals_judged(results: dict[str, Any]) -> str:
    """Every goal judged in this run, whatever its part: its key, figure, value, limit and
    verdict as results.json has them (a part's goals shown without knowing them)."""
    lines = ["| part | goal | figure | this run | goal | |", "|---|---|---|---|---|---|"]
    for key, part in results.items():
        if not isinstance(part, dict) or not isinstance(part.get("goals"), dict):
            continue
        for name, g in part["goals"].items():
            value = "-" if g.get("value") is None else f"{g['value']:g} {g['unit']}"
            lines.append(f"| {key} | `{name}` | {g.get('what', '')} | {value} | "
                         f"{goal_text(name, g)} | {verdict(g)} |")
    return "\n".join(lines)


def part_table(part: dict[str, Any]) -> str:
    """A JSON part of the registry (bench.registry) as it is: its figures, then its goals."""
    if "error" in part:
        return f"failed: {part['error']}"
    lines = ["| figure | p50 / p99 (n), or value | goal |", "|---|---|---|"]
    for name, f in (part.get("figures") or {}).items():
        lines.append(f"| {f.get('what', name)} (`{name}`) | {figure_cell(f)} | - |")
    for name, g in (part.get("goals") or {}).items():
        lines.append(f"| goal: {g['what']} | {g['value']} {g['unit']} | "
                     f"{goal_text(name, g)}: {verdict(g)} |")
    return "\n".join(lines)


def adapters_plot(results: dict[str, Any], out: Path, plt: Any) -> bool:
    """bench.adapters: recovery of A alone and of both at once (p50, min..p99), and B's
    probe latency quiet and while A recovers; False if there is nothing to draw."""
    f = (results.get("adapters") or {}).get("figures") or {}
    left = [(lbl, f.get(k) or {}) for lbl, k in (("A fails, B passes traffic", "a_recovery"),
                                                 ("A and B fail at once", "both_recovery"))]
    right = [(lbl, f.get(k) or {}) for lbl, k in (("quiet", "b_latency_quiet"),
                                                 ("while A recovers", "b_latency_during"))]
    if not any(d.get("n") for _, d in left + right):
        return False
    nvfs = (results.get("adapters") or {}).get("config", {}).get("vfs", "?")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.0))
    for ax, series, title, unit in (
            (axes[0], left, f"harness, 2 x {nvfs} VFs: injection -> every VF of the failed "
                            "adapter(s) passes traffic", "ms"),
            (axes[1], right, "adapter B's probe latency (send -> echo)", "ms")):
        shown = [(lbl, d) for lbl, d in series if d.get("n")]
        ax.bar([lbl for lbl, _ in shown], [d["p50"] for _, d in shown],
               yerr=[[d["p50"] - d["min"] for _, d in shown],
                     [d["p99"] - d["p50"] for _, d in shown]], capsize=4,
               color=["tab:blue", "tab:orange"][:len(shown)])
        for i, (_, d) in enumerate(shown):
            ax.text(i, d["p50"], f" p50 {d['p50']:.1f} (n={d['n']})", fontsize=8)
        ax.set_ylabel(f"{unit} (p50, min..p99)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    lost = f.get("b_lost_phase") or {}
    fig.suptitle(f"two adapters: B's probes lost while A recovers: {lost.get('value', '-')} "
                 f"of {lost.get('n', '-')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "adapters.png", dpi=110)
    plt.close(fig)
    return True

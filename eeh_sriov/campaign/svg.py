"""A scenario's PE states over time as inline SVG swimlanes (one lane per PE).

Drawn from a result's `pe_states` (each sample: a PE entered a PAPR state with flags at
t seconds since the first fault). A lane is a row of segments: each segment runs from one
sample of its PE to the next (the last one to the end of the axis), filled with the
colour of its state, or of its first flag that has a colour of its own (a permanently
failed PE is black whatever its code); the other flags a PE holds (isolated, recovering,
locked-out) are thin stripes along the segment's bottom. Violations that carry a time
are drawn as marks at that time, on their PE's lane or across every lane. The time axis
is in ms.

Every element a reader (or a test) looks for carries a class and data attributes:
`g.lane[data-pe]`, `rect.seg[data-pe][data-state][data-flags][data-t0-ms][data-t1-ms]`,
`line.violation[data-oracle]`, `text.tick`. Colours are the constants below and the
report's legend is drawn from them, so the picture and its key cannot disagree.
No external resources: the SVG is an element to put inside an HTML page.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

from eeh_abi.papr import PeState
from eeh_sriov.campaign.pes import order
from eeh_sriov.campaign.report_data import PeSample, Violation

SVG_NS = "http://www.w3.org/2000/svg"

# PAPR state code -> fill colour; these exact values are what the screenshot test finds.
STATE_COLOURS: dict[int, str] = {
    PeState.NORMAL: "#43a047",  # green: MMIO and DMA enabled
    PeState.RESET: "#fb8c00",  # orange: reset asserted
    PeState.FROZEN: "#1e88e5",  # blue: MMIO and DMA stopped
    PeState.DMA_STOPPED: "#26c6da",  # cyan: MMIO enabled, DMA stopped
    PeState.UNAVAILABLE: "#8e24aa",  # purple: temporarily unavailable (locked out, settling)
}
UNKNOWN_STATE_COLOUR = "#bdbdbd"
# Flags that override the state's colour (first one in the sample's flags wins).
FLAG_COLOURS: dict[str, str] = {
    "permanent": "#212121",  # permanently failed: state 5 with no retry
}
# Flags drawn as stripes along the bottom of a segment, one per flag held, stacked in
# this order from the bottom (a PE back in state 0 but still "recovering" shows it).
STRIPE_COLOURS: dict[str, str] = {
    "isolated": "#546e7a",  # blue grey
    "recovering": "#fdd835",  # yellow
    "locked-out": "#6d4c41",  # brown
}
STRIPE_H = 3
VIOLATION_COLOUR = "#d81b60"

LABEL_W = 70  # px for the PE names left of the lanes
LANE_H = 18
LANE_GAP = 4
AXIS_H = 22
PLOT_W = 600
MIN_SPAN_MS = 1.0


def state_name(code: int) -> str:
    try:
        return PeState(code).name.lower().replace("_", "-")
    except ValueError:
        return f"state {code}"


def colour(state: int, flags: Sequence[str]) -> str:
    for flag in flags:
        if flag in FLAG_COLOURS:
            return FLAG_COLOURS[flag]
    return STATE_COLOURS.get(state, UNKNOWN_STATE_COLOUR)


def _pe_order(pe: str) -> tuple[str, int]:
    """Adapter by adapter: its PE first, then its VFs by number (vf2 before vf10)."""
    return order(pe)


def nice_step(span: float, ticks: int = 6) -> float:
    """A tick step of 1, 2 or 5 times a power of ten giving about `ticks` ticks."""
    raw = span / max(ticks, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * power:
            return m * power
    return 10.0 * power  # pragma: no cover (raw <= 10 * power always)


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def swimlanes(samples: Iterable[PeSample], violations: Iterable[Violation] = (),
              *, width: int = PLOT_W, end_s: float | None = None) -> str:
    """The SVG element (a string) for these samples; `end_s` closes the last segments
    (default: a tenth past the last sample or violation)."""
    by_pe: dict[str, list[PeSample]] = {}
    for s in sorted(samples, key=lambda s: s.t):
        by_pe.setdefault(s.pe, []).append(s)
    marks = [v for v in violations if v.t is not None]
    last = max([s.t for ss in by_pe.values() for s in ss] + [v.t or 0.0 for v in marks]
               + [0.0])
    first = min([s.t for ss in by_pe.values() for s in ss] + [0.0])
    begin_ms = first * 1000  # 0 (the first fault) unless a sample came before it
    end_ms = max((end_s if end_s is not None else last * 1.1) * 1000, last * 1000,
                 begin_ms + MIN_SPAN_MS)
    pes = sorted(by_pe, key=_pe_order)
    height = AXIS_H + max(len(pes), 1) * (LANE_H + LANE_GAP)

    def x(ms: float) -> float:
        return LABEL_W + (ms - begin_ms) / (end_ms - begin_ms) * width

    out = [f'<svg xmlns="{SVG_NS}" class="swimlanes" width="{LABEL_W + width + 10}" '
           f'height="{height}" viewBox="0 0 {LABEL_W + width + 10} {height}" '
           'font-family="sans-serif" font-size="11">']
    for row, pe in enumerate(pes):
        y = row * (LANE_H + LANE_GAP)
        out.append(f'<g class="lane" data-pe={quoteattr(pe)}>')
        out.append(f'<text class="pe" x="{LABEL_W - 6}" y="{y + LANE_H - 5}" '
                   f'text-anchor="end">{escape(pe)}</text>')
        lane = by_pe[pe]
        for i, s in enumerate(lane):
            t0 = s.t * 1000
            t1 = lane[i + 1].t * 1000 if i + 1 < len(lane) else end_ms
            if t1 <= t0:
                continue  # replaced at the same instant: nothing to draw
            fill = colour(s.state, s.flags)
            # Whole pixels: crisp edges, so a rendered segment has exactly its colour.
            x0, x1 = round(x(t0)), max(round(x(t1)), round(x(t0)) + 1)
            title = (f"{pe}: {state_name(s.state)}"
                     + (f" ({', '.join(s.flags)})" if s.flags else "")
                     + f" from {_fmt(t0)} to {_fmt(t1)} ms")
            out.append(
                f'<rect class="seg" data-pe={quoteattr(pe)} data-state="{s.state}" '
                f'data-flags={quoteattr(",".join(s.flags))} data-t0-ms="{_fmt(t0)}" '
                f'data-t1-ms="{_fmt(t1)}" x="{x0}" y="{y}" width="{x1 - x0}" '
                f'height="{LANE_H}" fill="{fill}"><title>{escape(title)}</title></rect>')
            if fill in FLAG_COLOURS.values():
                continue  # the flag that coloured it says it all
            held = [f for f in STRIPE_COLOURS if f in s.flags]
            for k, flag in enumerate(held):
                out.append(f'<rect class="flag" data-pe={quoteattr(pe)} data-flag="{flag}" '
                           f'x="{x0}" y="{y + LANE_H - STRIPE_H * (k + 1)}" '
                           f'width="{x1 - x0}" height="{STRIPE_H}" '
                           f'fill="{STRIPE_COLOURS[flag]}"/>')
        out.append("</g>")
    lanes_h = len(pes) * (LANE_H + LANE_GAP)
    for v in marks:
        assert v.t is not None
        vx = round(x(v.t * 1000))
        if v.pe in by_pe:
            row = pes.index(v.pe)
            y0, y1 = row * (LANE_H + LANE_GAP) - 2, row * (LANE_H + LANE_GAP) + LANE_H + 2
        else:
            y0, y1 = 0, max(lanes_h - LANE_GAP, LANE_H)
        out.append(f'<line class="violation" data-oracle={quoteattr(v.oracle)} '
                   f'x1="{vx}" x2="{vx}" y1="{max(y0, 0)}" y2="{y1}" '
                   f'stroke="{VIOLATION_COLOUR}" stroke-width="3">'
                   f'<title>{escape(f"{v.oracle}: {v.rule} at {_fmt(v.t * 1000)} ms")}'
                   '</title></line>')
    axis_y = max(lanes_h, LANE_H + LANE_GAP)
    out.append(f'<line class="axis" x1="{LABEL_W}" x2="{LABEL_W + width}" y1="{axis_y}" '
               f'y2="{axis_y}" stroke="#616161"/>')
    step = nice_step(end_ms - begin_ms)
    k = math.ceil(begin_ms / step - 1e-9)
    while k * step <= end_ms + 1e-9:
        tx = round(x(k * step))
        out.append(f'<line x1="{tx}" x2="{tx}" y1="{axis_y}" y2="{axis_y + 4}" '
                   'stroke="#616161"/>')
        out.append(f'<text class="tick" x="{tx}" y="{axis_y + 15}" text-anchor="middle">'
                   f'{_fmt(k * step)}{" ms" if k == 0 else ""}</text>')
        k += 1
    out.append("</svg>")
    return "\n".join(out)


def legend() -> str:
    """The colours' key, as an HTML fragment of inline SVG swatches."""
    items = [(STATE_COLOURS[c], f"{int(c)} {state_name(c)}") for c in sorted(STATE_COLOURS)]
    items += [(col, flag) for flag, col in FLAG_COLOURS.items()]
    items += [(col, f"{flag} (stripe)") for flag, col in STRIPE_COLOURS.items()]
    items.append((VIOLATION_COLOUR, "violation"))
    return " ".join(
        f'<span class="key"><svg xmlns="{SVG_NS}" width="12" height="12"><rect width="12" '
        f'height="12" fill="{col}"/></svg> {escape(text)}</span>' for col, text in items)

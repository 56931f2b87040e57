"""`report.html`: the campaign's `Summary` as one self-contained page.

No external resources (no scripts, fonts, stylesheets or images to fetch: CSS inline,
drawings inline SVG), so the file can be mailed, archived as a CI artifact and opened
anywhere. Top to bottom: the headline (counts, coverage, throughput), the violations
(each with its violations' table and its PE-state swimlanes, `svg.swimlanes`), the
event x fault grid (a cell links to its first non-passing scenario), every scenario.
The grid's colours are the constants below; the screenshot test looks for them.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from eeh_sriov.campaign.report import (
    CELL_TEXT,
    Cell,
    Summary,
    fired,
    headline,
    markdown,
    replay_command,
)
from eeh_sriov.campaign.report_data import Result
from eeh_sriov.campaign.svg import legend, swimlanes

CELL_COLOURS: dict[Cell, str] = {
    Cell.FAIL: "#e53935",
    Cell.ERROR: "#ffd54f",
    Cell.PASS: "#a5d6a7",
    Cell.NOT_FIRED: "#e0e0e0",
    Cell.NOT_RUN: "#fafafa",
    Cell.NONE: "#ffffff",
}
CELL_W = 44
CELL_H = 22

_CSS = f"""
body {{ font-family: sans-serif; font-size: 13px; margin: 16px; color: #212121;
        background: #ffffff; }}
h1 {{ font-size: 20px; margin: 0 0 8px 0; }}
h2 {{ font-size: 16px; margin: 18px 0 6px 0; }}
h3 {{ font-size: 14px; margin: 12px 0 4px 0; }}
ul.headline {{ margin: 0; padding-left: 18px; }}
.key {{ margin-right: 12px; white-space: nowrap; }}
.key svg {{ vertical-align: middle; }}
table {{ border-collapse: collapse; }}
table.violations td, table.violations th, table.scenarios td, table.scenarios th {{
    border: 1px solid #bdbdbd; padding: 2px 6px; text-align: left; vertical-align: top; }}
table.grid th.fault {{ writing-mode: vertical-rl; transform: rotate(180deg);
    font-weight: normal; padding: 4px 0; width: {CELL_W}px; }}
table.grid th.event {{ font-weight: normal; text-align: right; padding: 0 6px;
    white-space: nowrap; }}
table.grid td {{ width: {CELL_W}px; min-width: {CELL_W}px; height: {CELL_H}px;
    padding: 0; text-align: center; border: 1px solid #ffffff; font-size: 11px; }}
table.grid td a {{ color: inherit; text-decoration: none; display: block; }}
{"".join(f"td.{c.value} {{ background: {col}; }}" + chr(10) for c, col in CELL_COLOURS.items())}
td.fail {{ color: #ffffff; font-weight: bold; }}
div.violation {{ border-left: 4px solid {CELL_COLOURS[Cell.FAIL]}; padding-left: 8px;
    margin-bottom: 12px; }}
div.violation.error {{ border-left-color: {CELL_COLOURS[Cell.ERROR]}; }}
code {{ font-size: 12px; }}
svg.swimlanes {{ display: block; margin: 6px 0; }}
"""


def _violation_block(r: Result, results: str) -> str:
    event, fault = r.cell
    out = [f'<div class="violation {escape(r.verdict)}" id="s-{escape(r.id)}">',
           f"<h3>{escape(r.verdict.upper())} {escape(r.id)}: {escape(fault)} at "
           f"{escape(event)}</h3>",
           f"<p>artifacts: <code>{escape(r.artifacts)}</code> (events.jsonl, trace.jsonl, "
           f"timeline.md); replay: <code>{escape(replay_command(r.id, results))}</code></p>"]
    if r.violations:
        out.append('<table class="violations"><tr><th>oracle</th><th>rule</th>'
                   "<th>t (ms)</th><th>PE</th><th>detail</th></tr>")
        for v in r.violations:
            t = "" if v.t is None else f"{v.t * 1000:.1f}"
            out.append(f"<tr><td>{escape(v.oracle)}</td><td>{escape(v.rule)}</td>"
                       f"<td>{t}</td><td>{escape(v.pe or '')}</td>"
                       f"<td>{escape(v.detail)}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>No violation recorded: the run itself failed; see its artifacts.</p>")
    if r.pe_states:
        out.append(swimlanes(r.pe_states, r.violations))
    else:
        out.append("<p>(no PE states recorded)</p>")
    out.append("</div>")
    return "\n".join(out)


def _rules(s: Summary) -> str:
    if not s.rules:
        return ""
    rows = "".join(f"<tr><td>{escape(rule)}</td><td>{n}</td></tr>" for rule, n in
                   s.rules.items())
    return f'<table class="violations"><tr><th>oracle/rule</th><th>scenarios</th></tr>{rows}' \
        "</table>"


def _grid(s: Summary) -> str:
    g = s.grid
    out = ['<table class="grid"><tr><th></th>']
    out += [f'<th class="fault">{escape(f)}</th>' for f in g.faults]
    out.append("</tr>")
    for e in g.events:
        out.append(f'<tr><th class="event">{escape(e)}</th>')
        for f in g.faults:
            cell = g.cell(e, f)
            results = g.results.get((e, f), ())
            ids = ", ".join(r.id for r in results)
            text = escape(CELL_TEXT[cell])
            bad = next((r for r in results if r.verdict != "pass"), None)
            if bad is not None:
                text = f'<a href="#s-{escape(bad.id)}">{text}</a>'
            out.append(f'<td class="{cell.value}" title="{escape(f"{e} x {f}: {ids}")}">'
                       f"{text}</td>")
        out.append("</tr>")
    out.append("</table>")
    return "\n".join(out)


def _scenarios(s: Summary) -> str:
    out = ['<table class="scenarios"><tr><th>id</th><th>verdict</th><th>event</th>'
           "<th>fault</th><th>fired</th><th>s</th><th>worker</th><th>shard</th></tr>"]
    for r in s.results:
        event, fault = r.cell
        out.append(f"<tr><td>{escape(r.id)}</td><td>{escape(r.verdict)}</td>"
                   f"<td>{escape(event)}</td><td>{escape(fault)}</td>"
                   f"<td>{'yes' if fired(r) else 'no'}</td>"
                   f"<td>{r.duration_s:.2f}</td><td>{escape(r.worker)}</td>"
                   f"<td>{escape(r.shard or '')}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def html(s: Summary, results: str = "results.jsonl") -> str:
    """The page; `results`: the results file replay commands name."""
    failures = s.failures
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Fault campaign {escape(s.campaign)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Fault campaign {escape(s.campaign)}</h1>",
        '<ul class="headline">' + "".join(f"<li>{escape(line)}</li>" for line in headline(s))
        + "</ul>",
        '<p class="toc"><a href="#violations">violations</a> · <a href="#grid">grid</a> · '
        '<a href="#scenarios">scenarios</a></p>',
        f'<h2 id="violations">Violations ({len(failures)})</h2>',
        _rules(s),
        f'<p class="legend">{legend()}</p>' if failures else "<p>None.</p>",
        *(_violation_block(r, results) for r in failures),
        '<h2 id="grid">Grid: event (rows) x fault (columns)</h2>',
        "<p>FAIL: a violation; ERR: the run broke; ok: passed; n/f: passed but the trigger "
        "never fired; -: not run; blank: not a pair of this campaign.</p>",
        _grid(s),
        f'<h2 id="scenarios">Scenarios ({len(s.results)})</h2>',
        _scenarios(s),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_reports(directory: Path, s: Summary) -> tuple[Path, Path]:
    """`report.md` and `report.html` in `directory`."""
    md, page = directory / "report.md", directory / "report.html"
    results = str(directory / "results.jsonl")
    md.write_text(markdown(s, results))
    page.write_text(html(s, results))
    return md, page

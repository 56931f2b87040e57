"""PE-state swimlanes: one lane per PE, a segment per state held, its colour the state's
(or its flag's), violations marked at their time; checked by parsing the SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from eeh_sriov.campaign.report_data import PeSample, Violation
from eeh_sriov.campaign.svg import (
    FLAG_COLOURS,
    LABEL_W,
    PLOT_W,
    STATE_COLOURS,
    STRIPE_COLOURS,
    STRIPE_H,
    VIOLATION_COLOUR,
    nice_step,
    swimlanes,
)

NS = {"s": "http://www.w3.org/2000/svg"}


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _segs(root: ET.Element, pe: str) -> list[ET.Element]:
    return root.findall(f".//s:g[@data-pe='{pe}']/s:rect[@class='seg']", NS)


SAMPLES = [PeSample(0.0, "vf10", 2, ()), PeSample(0.0, "adapter", 2, ()),
           PeSample(0.0, "vf2", 2, ()), PeSample(0.010, "adapter", 1, ()),
           PeSample(0.030, "adapter", 0, ()), PeSample(0.040, "vf2", 4, ()),
           PeSample(0.050, "vf2", 0, ()), PeSample(0.060, "vf10", 5, ("permanent",))]


def test_one_lane_per_pe_adapter_first_vfs_by_number() -> None:
    root = _parse(swimlanes(SAMPLES, end_s=0.1))
    lanes = [g.get("data-pe") for g in root.findall("s:g[@class='lane']", NS)]
    assert lanes == ["adapter", "vf2", "vf10"]


def test_segments_run_from_sample_to_sample_in_their_state_colour() -> None:
    root = _parse(swimlanes(SAMPLES, end_s=0.1))
    adapter = _segs(root, "adapter")
    assert [(r.get("data-state"), r.get("data-t0-ms"), r.get("data-t1-ms"), r.get("fill"))
            for r in adapter] == [("2", "0", "10", STATE_COLOURS[2]),
                                  ("1", "10", "30", STATE_COLOURS[1]),
                                  ("0", "30", "100", STATE_COLOURS[0])]
    # x is proportional to time: 100 ms over PLOT_W px, lanes start after the labels
    xs = [(int(r.get("x", "")), int(r.get("width", ""))) for r in adapter]
    assert xs == [(LABEL_W, PLOT_W // 10), (LABEL_W + PLOT_W // 10, PLOT_W // 5),
                  (LABEL_W + 3 * PLOT_W // 10, 7 * PLOT_W // 10)]
    assert [r.get("fill") for r in _segs(root, "vf2")] == [
        STATE_COLOURS[2], STATE_COLOURS[4], STATE_COLOURS[0]]
    # lanes do not overlap
    ys = [int(_segs(root, pe)[0].get("y", "")) for pe in ("adapter", "vf2", "vf10")]
    assert ys == sorted(set(ys))


def test_a_flag_with_a_colour_of_its_own_wins_over_the_state() -> None:
    root = _parse(swimlanes(SAMPLES, end_s=0.1))
    last = _segs(root, "vf10")[-1]
    assert (last.get("data-state"), last.get("data-flags")) == ("5", "permanent")
    assert last.get("fill") == FLAG_COLOURS["permanent"] != STATE_COLOURS[5]
    title = last.find("s:title", NS)
    assert title is not None and title.text == "vf10: unavailable (permanent) from 60 to 100 ms"


def test_violations_are_marked_on_their_lane_at_their_time() -> None:
    vs = [Violation("safety", "thaw-before-allow-unfreeze", "", 0.02, "vf2"),
          Violation("liveness", "no-end", "", None, None),  # no time: not drawn
          Violation("isolation", "traffic", "", 0.05, None)]  # no PE: across every lane
    root = _parse(swimlanes(SAMPLES, vs, end_s=0.1))
    marks = root.findall("s:line[@class='violation']", NS)
    assert [m.get("data-oracle") for m in marks] == ["safety", "isolation"]
    assert {m.get("stroke") for m in marks} == {VIOLATION_COLOUR}
    assert marks[0].get("x1") == str(LABEL_W + PLOT_W // 5)
    vf2 = _segs(root, "vf2")[0]
    y = int(vf2.get("y", ""))
    assert int(marks[0].get("y1", "")) < y + 18 and int(marks[0].get("y2", "")) > y
    assert int(marks[1].get("y1", "")) == 0  # the whole height


def test_time_axis_in_ms_with_round_ticks() -> None:
    root = _parse(swimlanes(SAMPLES, end_s=0.1))
    ticks = [t.text for t in root.findall("s:text[@class='tick']", NS)]
    assert ticks == ["0 ms", "20", "40", "60", "80", "100"]
    assert [nice_step(x) for x in (100, 7, 1300)] == [20, 2, 500]


def test_samples_before_the_first_fault_and_odd_input_still_draw() -> None:
    early = [PeSample(-0.01, "vf0", 0, ()), PeSample(0.0, "vf0", 2, ()),
             PeSample(0.0, "vf1", 3, ())]  # 3: not a PAPR state; drawn grey, named
    root = _parse(swimlanes(early, end_s=0.03))
    vf0 = _segs(root, "vf0")
    assert int(vf0[0].get("x", "")) == LABEL_W and vf0[0].get("data-t0-ms") == "-10"
    assert "state 3" in (_segs(root, "vf1")[0].findtext("s:title", "", NS))
    assert _parse(swimlanes([])).get("class") == "swimlanes"  # nothing to draw: empty lanes


def test_flags_held_are_stripes_at_the_segment_bottom() -> None:
    samples = [PeSample(0.0, "vf0", 2, ("isolated", "recovering")),
               PeSample(0.02, "vf0", 0, ("recovering",)),  # healthy, still recovering
               PeSample(0.05, "vf0", 0, ()),
               PeSample(0.0, "vf1", 5, ("isolated", "permanent"))]
    root = _parse(swimlanes(samples, end_s=0.1))
    vf0 = root.find("s:g[@data-pe='vf0']", NS)
    assert vf0 is not None
    stripes = [(r.get("data-flag"), r.get("x"), r.get("width"), r.get("y"), r.get("fill"))
               for r in vf0.findall("s:rect[@class='flag']", NS)]
    seg = _segs(root, "vf0")
    bottom = int(seg[0].get("y", "")) + int(seg[0].get("height", ""))
    assert stripes == [
        ("isolated", seg[0].get("x"), seg[0].get("width"), str(bottom - STRIPE_H),
         STRIPE_COLOURS["isolated"]),
        ("recovering", seg[0].get("x"), seg[0].get("width"), str(bottom - 2 * STRIPE_H),
         STRIPE_COLOURS["recovering"]),
        ("recovering", seg[1].get("x"), seg[1].get("width"), str(bottom - STRIPE_H),
         STRIPE_COLOURS["recovering"])]
    # a permanently failed PE is black: no stripes over it
    assert root.findall("s:g[@data-pe='vf1']/s:rect[@class='flag']", NS) == []

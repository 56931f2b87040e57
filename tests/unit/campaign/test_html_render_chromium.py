"""report.html as a person sees it: rendered by headless Chromium (Debian's `chromium`,
listed in host-packages.txt), the screenshot's pixels checked: the failing grid cell is
red where the grid puts it (right of and below passing cells), the violation's
swimlanes come before the grid with each state's colour over a width proportional to
the time it held, and the violation's mark sits on its PE's lane at its time."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from eeh_sriov.campaign.report import Cell, summarize
from eeh_sriov.campaign.report_data import read_manifest, read_results
from eeh_sriov.campaign.report_html import CELL_COLOURS, write_reports
from eeh_sriov.campaign.svg import STATE_COLOURS, VIOLATION_COLOUR
from tests.support.campaign_results import line, scenario, violation, write_run

REPO = Path(__file__).resolve().parents[3]
WIDTH, HEIGHT = 1200, 900


def _chromium() -> str:
    found = shutil.which("chromium")
    if found:
        return found
    listed = [w.split("#")[0].strip() for w in
              (REPO / "host-packages.txt").read_text().splitlines()]
    if "chromium" in listed:
        pytest.fail("chromium is listed in host-packages.txt but not installed here: "
                    "run `make host-setup`")
    pytest.skip("chromium is not installed and not listed in host-packages.txt")


def screenshot(page: Path, out: Path) -> np.ndarray:
    """The page rendered at WIDTH x HEIGHT by headless Chromium, as an RGB uint8 array."""
    # Chromium's profile and temp files in a short directory of the session's temp dir
    # (its singleton socket path must fit a sockaddr_un), removed afterwards.
    with tempfile.TemporaryDirectory(prefix="chr-") as scratch:
        env = {**os.environ, "TMPDIR": scratch, "HOME": scratch}
        p = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--force-device-scale-factor=1", f"--user-data-dir={scratch}/profile",
             f"--screenshot={out}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri()],
            capture_output=True, text=True, timeout=90, env=env)
    assert p.returncode == 0 and out.is_file(), p.stderr[-2000:]
    rgba = imread(out)
    return np.asarray(np.rint(rgba[:, :, :3] * 255), dtype=np.uint8)


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


def mask(img: np.ndarray, colour: str, tol: int = 3) -> np.ndarray:
    return np.all(np.abs(img.astype(np.int16) - _rgb(colour)) <= tol, axis=2)


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int


def runs(row: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """Runs of True in a row at least `min_len` long, as [start, end)."""
    out, start = [], None
    for x, v in enumerate([*row.tolist(), False]):
        if v and start is None:
            start = x
        elif not v and start is not None:
            if x - start >= min_len:
                out.append((start, x))
            start = None
    return out


def blocks(m: np.ndarray, min_w: int) -> Box:
    """The bounding box of every horizontal run of at least `min_w` pixels (swatches in the
    legend and text are shorter)."""
    ys, xs0, xs1 = [], [], []
    for y in range(m.shape[0]):
        for a, b in runs(m[y], min_w):
            ys.append(y)
            xs0.append(a)
            xs1.append(b)
    assert ys, "colour not found"
    return Box(min(xs0), min(ys), max(xs1), max(ys) + 1)


@pytest.mark.timeout(180)
def test_rendered_report_shows_the_failing_cell_and_the_lanes(tmp_path: Path) -> None:
    cells = [scenario(e, f, pe=pe) for e, pe in (("pe-frozen", "vf0"), ("reset-hot", "adapter"))
             for f in ("reset-fails", "vf-error")]
    bad = cells[3]  # second row, second column: policy/reset-hot@adapter x vf-error:other
    states = [{"t": 0.0, "pe": "adapter", "state": 2, "flags": []},
              {"t": 0.0, "pe": "vf0", "state": 2, "flags": []},
              {"t": 0.02, "pe": "adapter", "state": 1, "flags": []},
              {"t": 0.05, "pe": "adapter", "state": 0, "flags": []},
              {"t": 0.08, "pe": "vf0", "state": 0, "flags": []}]
    lines = [line(s, "fail", violations=[violation(t=0.04, pe="vf0")], pe_states=states)
             if s is bad else line(s) for s in cells]
    d = write_run(tmp_path / "run", lines)
    summary = summarize(read_results(d / "results.jsonl"), [m for m in [read_manifest(d)] if m])
    _, page = write_reports(d, summary)
    img = screenshot(page, tmp_path / "shot.png")

    assert img.shape == (HEIGHT, WIDTH, 3)
    fail = blocks(mask(img, CELL_COLOURS[Cell.FAIL]), 30)
    ok = blocks(mask(img, CELL_COLOURS[Cell.PASS]), 30)
    assert fail.x1 - fail.x0 >= 40 and fail.y1 - fail.y0 >= 18  # one whole cell
    # the failing cell is the grid's bottom-right: passing cells left of it and above it
    assert ok.x0 < fail.x0 and ok.y0 < fail.y0
    assert fail.x1 >= ok.x1 and fail.y1 >= ok.y1
    pass_mask = mask(img, CELL_COLOURS[Cell.PASS])
    assert pass_mask[fail.y0:fail.y1, ok.x0:fail.x0].any()  # same row, to the left
    assert pass_mask[ok.y0:fail.y0, fail.x0:fail.x1].any()  # same column, above

    # the violation's lanes come first, above the grid
    frozen = blocks(mask(img, STATE_COLOURS[2]), 50)
    assert frozen.y1 < ok.y0
    # on the adapter's lane (the first), frozen 0-20 ms then reset 20-50 ms: widths 2:3
    reset = blocks(mask(img, STATE_COLOURS[1]), 50)
    y = (reset.y0 + reset.y1) // 2
    blue = runs(mask(img, STATE_COLOURS[2])[y], 20)
    orange = runs(mask(img, STATE_COLOURS[1])[y], 20)
    assert len(blue) == 1 and len(orange) == 1
    (b0, b1), (o0, o1) = blue[0], orange[0]
    assert abs(b1 - o0) <= 1  # adjacent: the reset follows the freeze
    assert (o1 - o0) / (b1 - b0) == pytest.approx(1.5, abs=0.05)
    normal = runs(mask(img, STATE_COLOURS[0])[y], 20)
    assert normal and abs(normal[0][0] - o1) <= 1
    # vf0's lane below: frozen 0-80 ms with the violation's mark at 40 ms (half way)
    vf0_y = frozen.y1 - 5
    assert vf0_y > reset.y1
    mark = np.nonzero(mask(img, VIOLATION_COLOUR)[vf0_y])[0]
    assert mark.size >= 2
    vf0_blue = runs(mask(img, STATE_COLOURS[2])[vf0_y], 20)
    lane_x0, lane_x1 = vf0_blue[0][0], vf0_blue[-1][1]
    assert (mark.mean() - lane_x0) / (lane_x1 - lane_x0) == pytest.approx(0.5, abs=0.03)

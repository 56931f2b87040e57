"""A benchmark part that writes its JSON and exits 1, as a benchmark whose own goal was
missed does (bench.device_model): `python -m tests.unit.bench.part_exit_one --json FILE`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __name__ == "__main__":
    out = Path(sys.argv[sys.argv.index("--json") + 1])
    goal = {"value": 2.0, "goal": 1.0, "unit": "ms", "met": False, "what": "x",
            "goal_is": "<="}
    out.write_text(json.dumps({"figures": {}, "goals": {"x": goal}, "config": {}}))
    print("goal x: MISSED")
    sys.exit(1)

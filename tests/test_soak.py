"""The soak with chaos (benchmarks/soak.py), short: a minute of mixed load on tiny and echo over
/predictions, KServe v1 and v2 (JSON and binary) while workers are SIGKILLed, tiny is scaled,
echo 2.0 is registered and unregistered, and clients disconnect, trickle or send too much. Every
request must end answered correctly or refused with a defined status and reason; none lost, none
answered with another's result; the server stops cleanly. (The longer runs: docs/figures.md.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def test_a_minute_of_chaos_loses_no_request(tmp_path):
    done = subprocess.run([sys.executable, str(SOAK), "--minutes", "1", "--no-resnet", "--fault-every", "3",
                           "--clients", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    summary = json.loads(next((tmp_path / "results").glob("*-soak/summary.json")).read_text())["runs"]["launchkit"]
    assert summary["outcomes"].get("lost", 0) == 0 and summary["outcomes"].get("wrong", 0) == 0
    assert summary["outcomes"]["correct"] > 1000
    faults = " ".join(what for _, what in summary["faults"])
    for fault in ("SIGKILL", "scale tiny", "echo 2.0", "disconnected", "slow sender", "oversize"):
        assert fault in faults, (fault, faults)

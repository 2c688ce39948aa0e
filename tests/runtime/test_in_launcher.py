"""A script using the runtime API inside `launchkit run` instances: its pools are planned inside
each instance's cores, and its streams' OpenMP teams stay there even with OMP_PROC_BIND/OMP_PLACES
in the environment (as serving workers have them): the runtime rebinds each team explicitly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = """
    import json, os
    from pathlib import Path
    import torch
    from launchkit.runtime import CPUPool, MultiStreamModule

    def allowed(tid):
        status = Path(f"/proc/self/task/{tid}/status").read_text()
        return next(l.split(":", 1)[1].strip() for l in status.splitlines() if l.startswith("Cpus_allowed_list"))

    pool = CPUPool()
    model = torch.jit.freeze(torch.jit.trace(torch.nn.Linear(8, 8).eval(), torch.zeros(1, 8)))
    streams = MultiStreamModule(model, num_streams="AUTO", cpu_pool=pool)
    out = streams(torch.rand(4, 8))
    masks = sorted({allowed(task.name) for task in Path("/proc/self/task").iterdir()})
    print(json.dumps({"instance": os.environ["LAUNCHKIT_INSTANCE_ID"], "cpus": os.environ["LAUNCHKIT_CPUS"],
                      "pool": pool.core_ids, "streams": [allowed(t) for t in streams.stream_threads],
                      "masks": masks, "rows": out.shape[0], "bind": os.environ.get("OMP_PROC_BIND")}))
"""


def test_a_runtime_script_plans_its_pools_inside_its_instance(tmp_path):
    script = tmp_path / "streams.py"
    script.write_text(textwrap.dedent(SCRIPT))
    count = min(2, len(os.sched_getaffinity(0)))
    # a binding from the process's mask, as serving workers get: the runtime's streams must still keep to their pools
    env = {**os.environ, "OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
    result = subprocess.run([sys.executable, "-m", "launchkit", "run", "--ninstances", str(count), str(script)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    # each line comes prefixed with its instance: "[0] {...}"
    reports = [json.loads(line[line.index("{"):]) for line in result.stdout.splitlines() if "{" in line]
    assert len(reports) == count
    pools = [set(report["pool"]) for report in reports]
    assert all(not (a & b) for i, a in enumerate(pools) for b in pools[i + 1:])  # instances never share a core
    for report in reports:
        assert report["rows"] == 4
        assert ",".join(map(str, report["pool"])) == report["cpus"].replace("-", ",") or len(report["pool"]) > 1
        assert set(report["streams"]) <= {str(cpu) for cpu in report["pool"]}
        assert report["bind"] == "close"

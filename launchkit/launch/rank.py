"""The entry point torchrun's agent starts for each local rank: take the planned CPUs and
environment of this LOCAL_RANK, then exec the user's program.

    python -m launchkit.launch.rank RANKS.json      (written by launchkit.launch.distributed)

Exec, not a child: the rank is the program, so torchrun's agent watches, signals and reaps the
program itself. With a log folder, the rank's stdout and stderr go to
``<prefix>.rank<RANK>.out.log`` / ``.err.log`` there (RANK: the global rank).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m launchkit.launch.rank RANKS.json (started by launchkit run under torchrun)",
              file=sys.stderr)
        return 2
    content = json.loads(Path(argv[0]).read_text())
    try:
        local_rank = int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        print("launchkit: error: LOCAL_RANK is not set: this entry point is started by torchrun's agent "
              "(launchkit run --nproc-per-node ...)", file=sys.stderr)
        return 2
    ranks = content["ranks"]
    if not 0 <= local_rank < len(ranks):
        print(f"launchkit: error: LOCAL_RANK={local_rank} but the plan has {len(ranks)} local ranks", file=sys.stderr)
        return 2
    launch = ranks[local_rank]
    if launch["bind_cpus"]:
        os.sched_setaffinity(0, launch["cpus"])
    env = {**os.environ, **launch["env"]}
    if content.get("log_dir"):
        folder = Path(content["log_dir"])
        stem = f"{content.get('log_prefix') or 'run'}.rank{os.environ.get('RANK', local_rank)}"
        for stream, suffix in ((1, "out"), (2, "err")):
            handle = os.open(folder / f"{stem}.{suffix}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, stream)
            os.close(handle)
    program = launch["argv"]
    try:
        os.execvpe(program[0], program, env)
    except OSError as error:
        print(f"launchkit: error: cannot start {program[0]}: {error.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The project's own promises: the README quickstart and CI run the same test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_readme_starts_with_two_command_quickstart_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quickstart, re.DOTALL)
    assert len(commands) == 2 and all("\n" not in command for command in commands)
    ci = (ROOT / ".ci/run").read_text()
    assert commands[1] in ci


def test_install_path_pins_torch():
    assert 'torch==2.13.0' in (ROOT / "pyproject.toml").read_text()


def test_cli_layers_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, launchkit.cli, launchkit.launch.supervise, launchkit.launch.machine, launchkit.serve.server, "
            "launchkit.serve.api.inference, launchkit.serve.fleet.process, launchkit.bench.runner; print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"

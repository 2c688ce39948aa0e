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



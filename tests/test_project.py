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


def test_the_install_path_pins_the_cpu_torch_and_got_it():
    """An unpinned torch pulls the multi-GB CUDA build: the extras setup.sh installs pin it, and the
    environment the suite runs in has exactly that torch, the CPU build."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    setup = (ROOT / "scripts/setup.sh").read_text()
    installed_extras = [extra for extra in project["optional-dependencies"] if f".[{extra}]" in setup]
    assert installed_extras, "setup.sh installs none of the extras"
    for extra in installed_extras:
        torches = [Requirement(r) for r in project["optional-dependencies"][extra] if Requirement(r).name == "torch"]
        assert [str(r.specifier) for r in torches] == ["==2.13.0"], (extra, torches)
    assert version("torch").split("+")[0] == "2.13.0"
    import torch

    assert torch.version.cuda is None  # the CPU build



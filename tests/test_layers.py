"""The house's layers: imports point down only, with no cycle, function-level imports included.

Read from the source with ``ast`` (nothing is imported), so an import hidden inside a function
counts like one at the top of a module. docs/development.md draws the same picture.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "launchkit"

# Top-level packages, lowest first. A module may import its own package and lower layers only;
# packages on one layer do not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # machine facts and shared basics
    ("archive",),  # .mar archives
    ("launch",),  # planning and starting pinned processes
    ("model", "runtime"),  # one model in torch; in-process streams
    ("examples",),  # the bundled models
    ("serve", "bench", "optimize"),  # the applications
    ("tune",),  # built on serve and bench
    ("cli",),  # the commands
    ("__main__",),  # python -m launchkit
)
# Inside serve, by role, lowest first.
SERVE_LAYERS: tuple[tuple[str, ...], ...] = (
    ("wire", "properties", "tensors", "addresses", "limits"),
    ("settings", "sources"),
    ("scheduling",),
    ("fleet", "worker"),
    ("loading",),
    ("api",),
    ("server", "daemon"),
)
# Modules that must not import torch, even indirectly: the CLI, the frontend, the launcher, bench.
TORCH_FREE = ("cli", "core", "archive", "launch", "bench", "serve.server", "serve.api", "serve.fleet",
              "serve.scheduling", "serve.settings", "serve.loading", "examples.cache", "model.spec")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "launchkit" or name.startswith("launchkit.")]


def _graph() -> dict[str, list[tuple[int, str]]]:
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        edges = []
        for line, target in _imports(path):
            # "from launchkit.x import y": y may be a module or a name; keep the longest module that exists
            while target not in modules and "." in target:
                target = target.rpartition(".")[0]
            if target in modules and target != name and (line, target) not in edges:
                edges.append((line, target))
        graph[name] = edges
    return graph


def _rank(name: str, layers: tuple[tuple[str, ...], ...], depth: int) -> int | None:
    parts = name.split(".")
    if len(parts) <= depth:
        return None
    return next((rank for rank, layer in enumerate(layers) if parts[depth] in layer), None)


def test_every_package_has_a_layer():
    packages = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()}
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    known = {name for layer in LAYERS for name in layer}
    assert not (packages | modules) - known, f"place these in LAYERS: {sorted((packages | modules) - known)}"
    serve = {path.stem for path in (PACKAGE / "serve").iterdir() if path.suffix == ".py" or path.is_dir()}
    serve -= {"__init__", "__pycache__"}
    known_serve = {name for layer in SERVE_LAYERS for name in layer}
    assert not serve - known_serve, f"place these in SERVE_LAYERS: {sorted(serve - known_serve)}"


def test_imports_point_down_only():
    wrong = []
    for name, edges in _graph().items():
        for line, target in edges:
            if target == "launchkit":  # the root holds only __version__
                continue
            source_rank, target_rank = _rank(name, LAYERS, 1), _rank(target, LAYERS, 1)
            same_package = name.split(".")[1] == target.split(".")[1]
            if not same_package and not target_rank < source_rank:
                wrong.append(f"{name}:{line} imports {target} (layer {target_rank} is not below {source_rank})")
            if same_package and name.split(".")[1] == "serve":
                source_sub, target_sub = _rank(name, SERVE_LAYERS, 2), _rank(target, SERVE_LAYERS, 2)
                same_part = source_sub is not None and name.split(".")[2] == target.split(".")[2]
                if target_sub is not None and source_sub is not None and not same_part and target_sub >= source_sub:
                    wrong.append(f"{name}:{line} imports {target} (serve layer {target_sub} is not below {source_sub})")
    assert not wrong, "upward or sideways imports:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = {name: [target for _, target in edges] for name, edges in _graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_catch_a_planted_mistake(tmp_path, monkeypatch):
    """The checks are not vacuous: an upward import and a cycle planted in a copy of the tree are found."""
    import shutil

    copy = tmp_path / "launchkit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    planted = copy / "core" / "values.py"
    planted.write_text(planted.read_text() + "\n\ndef _bad():\n    from launchkit.serve.server import run_server\n")
    plan = copy / "launch" / "plan.py"  # plan ← runplan ← supervise: importing supervise closes a cycle
    plan.write_text(plan.read_text() + "\n\ndef _cycle():\n    from launchkit.launch.supervise import supervise\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", copy)
    for check, words in ((test_imports_point_down_only, ("launchkit.core.values", "launchkit.serve.server")),
                         (test_no_import_cycle, ("launchkit.launch.plan", "launchkit.launch.supervise"))):
        try:
            check()
        except AssertionError as error:
            assert all(word in str(error) for word in words), str(error)
        else:
            raise AssertionError(f"{check.__name__} did not find the planted mistake")


def test_torch_free_parts_do_not_import_torch():
    modules = sorted(name for name in _graph() if any(name == part or name.startswith(part + ".")
                                                       for part in (f"launchkit.{p}" for p in TORCH_FREE)))
    code = "import sys\n" + "".join(f"import {name}\n" for name in modules) + "print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False", f"one of {modules} imports torch"

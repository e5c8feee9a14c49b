"""The house rules of ARCHITECTURE.md, executable: the models wing travels alone, the wings are layered.

The models wing (`hf_jukebox_mir/models/`) is copied beside the weights of every converted folder and loaded by
`trust_remote_code=True` users who do not have this package: each file there may import only its siblings
(`from .x import y`) and installed third-party libraries. The tool wings sit around it and import it, never the
other way round; no tool imports the CLI; conversion stands on the models wing alone.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hf_jukebox_mir"
MODELS = PACKAGE / "models"
TOOL_WINGS = ("conversion", "extraction", "probing", "publishing")
#: wing -> wings it must never import (functions-level imports count: a lazy import is still an arrow)
FORBIDDEN = {
    "models": {"conversion", "extraction", "probing", "publishing", "cli", "root"},
    "conversion": {"extraction", "probing", "publishing", "cli", "root"},
    "extraction": {"cli", "root"},
    "probing": {"cli", "root"},
    "publishing": {"cli", "root"},
    "cli": {"root"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, optional: bool = True) -> list[tuple[int, str, int, list[str]]]:
    """(line, module or "", level, imported names) of every import statement in `path`, at any depth;
    without the optional ones (inside `try: ... except ImportError`) when `optional=False`."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped: set[int] = set()
    if not optional:
        for node in ast.walk(tree):
            if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
            ):
                skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level, [a.name for a in node.names]))
    return found


def models_wing_violations(folder: Path = MODELS) -> list[str]:
    """Every import in `folder` that a `trust_remote_code=True` user without the package could not satisfy."""
    siblings = {p.stem for p in folder.glob("*.py")}
    problems = []
    for path in sorted(folder.rglob("*.py")):
        where = path.relative_to(folder.parent)
        if path.parent != folder:
            problems.append(f"{where}: sub-folders are not copied beside the weights")
        for line, module, level, names in _imports(path, optional=False):
            if level:
                targets = [module] if module else names
                if level != 1 or any("." in t or t not in siblings for t in targets):
                    problems.append(
                        f"{where}:{line}: relative import {'.' * level}{module} of {names} is not a "
                        "one-level sibling import (`from .sibling import name`)"
                    )
                continue
            top = module.split(".")[0]
            if top == "hf_jukebox_mir":
                problems.append(f"{where}:{line}: imports {module}, which remote-code users do not have")
            elif top not in sys.stdlib_module_names and importlib.util.find_spec(top) is None:
                problems.append(f"{where}:{line}: imports {module}, which is not an installed library")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # importlib / resources by name
            if isinstance(node, ast.Call):
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and str(arg.value).split(".")[0] == "hf_jukebox_mir":
                        problems.append(f"{where}:{node.lineno}: names the package {arg.value!r} in a call")
    return problems


def _wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "_registration":
        return "root"
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "root"


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> modules of the package it imports (resolved; a package's own `__init__` is not an arrow)."""
    modules = {_module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        for _, module, level, names in _imports(path):
            if level:
                anchor = base[: len(base) - (level - 1)]
                target = ".".join([*anchor, module] if module else anchor)
            elif module.split(".")[0] == "hf_jukebox_mir":
                target = module
            else:
                continue
            candidates = [f"{target}.{n}" for n in names] if names else []
            hits = [c for c in candidates if c in modules] or ([target] if target in modules else [])
            graph[name].update(h for h in hits if h != name)
    return graph


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for source, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _wing(target) in FORBIDDEN.get(_wing(source), set()):
                problems.append(
                    f"{source} imports {target}: the {_wing(source)} wing may not import the {_wing(target)} wing"
                )
    return problems


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_models_file_imports_only_siblings_and_installed_libraries():
    assert len(list(MODELS.glob("*.py"))) >= 15
    assert models_wing_violations() == []


def test_the_wings_are_layered():
    assert layering_violations(import_graph()) == []


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


@pytest.mark.parametrize(
    "line, expected",
    [
        ("from hf_jukebox_mir.probing.tasks import get_task", "imports hf_jukebox_mir.probing.tasks"),
        ("from ..probing import tasks", "not a one-level sibling import"),
        ("from .no_such_sibling import x", "not a one-level sibling import"),
        ("import no_such_library_xyz", "not an installed library"),
        (
            "import importlib\nimportlib.import_module('hf_jukebox_mir.models.tokenization_jukebox')",
            "names the package",
        ),
    ],
)
def test_the_models_check_catches_each_kind_of_violation(tmp_path, line, expected):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "errors.py").write_text("import torch\nfrom .errors import x\n")
    (folder / "modeling_x.py").write_text(f"def f():\n    {line.replace(chr(10), chr(10) + '    ')}\n")
    problems = models_wing_violations(folder)
    assert len(problems) == 1 and expected in problems[0], problems


def test_the_layering_check_catches_a_back_arrow_and_a_cycle():
    graph = {
        "hf_jukebox_mir.models.modeling_x": {"hf_jukebox_mir.probing.tasks"},
        "hf_jukebox_mir.probing.tasks": {"hf_jukebox_mir.probing.metrics", "hf_jukebox_mir.cli.probe"},
        "hf_jukebox_mir.probing.metrics": {"hf_jukebox_mir.probing.tasks"},
    }
    assert layering_violations(graph) == [
        "hf_jukebox_mir.models.modeling_x imports hf_jukebox_mir.probing.tasks: the models wing may not import "
        "the probing wing",
        "hf_jukebox_mir.probing.tasks imports hf_jukebox_mir.cli.probe: the probing wing may not import the cli wing",
    ]
    assert import_cycles(graph) == [["hf_jukebox_mir.probing.metrics", "hf_jukebox_mir.probing.tasks"]]


def test_the_package_and_the_cli_parser_import_neither_torch_nor_transformers():
    """`import hf_jukebox_mir` and building the CLI parser stay light (what keeps `jukebox-mir --help` fast);
    the first public name used loads the models and registers them."""
    import json
    import subprocess

    script = (
        "import json, sys\n"
        "import hf_jukebox_mir\n"
        "from hf_jukebox_mir.cli import get_parser\n"
        "get_parser()\n"
        "light = sorted(m for m in ('torch', 'transformers', 'datasets', 'numpy') if m in sys.modules)\n"
        "hf_jukebox_mir.JukeboxMIRConfig\n"
        "from transformers import AutoConfig\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "print(json.dumps({'light': light, 'registered': 'jukebox_mir' in CONFIG_MAPPING}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"light": [], "registered": True}

"""The package imports in one direction: no cycle among `mssl_tf`'s modules, and `mssl_tf.training` in layers.

Read with `ast` (nothing is imported), counting every import, function-local ones included: an import made late
to dodge a cycle is still a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).parents[1] / "mssl_tf"

# `mssl_tf.training`'s modules from the bottom up: each may import only those before it.
TRAINING_LAYERS = (
    "config", "artifacts", "clusters", "datasets", "model", "guards", "backup", "callbacks", "records", "snapshots", "fit",
    "distributed", "run", "evaluate",
)

# Registered names that are also English words count only as a whole string literal (`"memory"`), not in prose.
ENGLISH_METHOD_NAMES = {"memory", "matching", "transformation"}


def module_name(path: Path, root: Path = PACKAGE_ROOT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], root: Path = PACKAGE_ROOT) -> set[str]:
    """The package modules `path` imports (`from package import name` counts `package.name` when it is a module)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where only `a.b` is ours
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(path, root) for path in paths}
    return {module_name(path, root): imported_modules(path, modules, root) for path in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first = last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def test_mssl_tf_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_training_modules_import_downward_only():
    graph = import_graph()
    training = {module for module in graph if module.startswith("mssl_tf.training.")}
    layered = {f"mssl_tf.training.{name}" for name in TRAINING_LAYERS}
    assert training == layered, f"place every training module in TRAINING_LAYERS: {sorted(training ^ layered)}"
    upward = []
    for position, name in enumerate(TRAINING_LAYERS):
        module = f"mssl_tf.training.{name}"
        for target in graph[module]:
            if target == "mssl_tf.training":
                upward.append(f"{module} → the package itself")
            elif target.startswith("mssl_tf.training.") and TRAINING_LAYERS.index(target.rsplit(".", 1)[1]) > position:
                upward.append(f"{module} → {target}")
    assert not upward, "upward imports: " + ", ".join(upward)


def test_no_library_module_below_the_command_line_imports_it():
    graph = import_graph()
    offenders = [f"{module} → {target}" for module, targets in graph.items() if not module.startswith("mssl_tf.cli")
                 for target in targets if target.startswith("mssl_tf.cli")]
    assert not offenders, "library modules import the command line: " + ", ".join(offenders)


def test_argparse_only_in_command_line_modules():
    users = [module_name(path) for path in PACKAGE_ROOT.rglob("*.py")
             if "argparse" in {alias.name for node in ast.walk(ast.parse(path.read_text()))
                               if isinstance(node, ast.Import) for alias in node.names}
             or any(isinstance(node, ast.ImportFrom) and node.module == "argparse"
                    for node in ast.walk(ast.parse(path.read_text())))]
    assert all(module.startswith("mssl_tf.cli") or module == "mssl_tf.serving.cli" for module in users), users


def method_names_in(text: str, names: set[str]) -> list[tuple[int, list[str]]]:
    """(line, names) where `text` names a method: any word for distinctive names, a whole literal for English ones."""
    found = []
    for number, line in enumerate(text.lower().splitlines(), 1):
        words = set(re.split(r"[^a-z0-9_]+", line))
        literals = set(re.findall(r"[\"']([a-z0-9_]+)[\"']", line))
        hits = sorted((words & (names - ENGLISH_METHOD_NAMES)) | (literals & names))
        if hits:
            found.append((number, hits))
    return found


@pytest.mark.parametrize("folder", ["training", "cli"])
def test_drivers_and_command_line_name_no_method(folder):
    """Methods declare what a run gives them (`mssl_tf.methods`); drivers and CLI never list them by name."""
    from mssl_tf.methods import METHODS

    found = [f"{path.relative_to(PACKAGE_ROOT)}:{number} {hits}"
             for path in sorted((PACKAGE_ROOT / folder).rglob("*.py"))
             for number, hits in method_names_in(path.read_text(), set(METHODS))]
    assert not found, "method names outside the registries: " + "; ".join(found)


# === The checker itself can tell ===
def test_the_checker_finds_a_cycle_and_an_upward_import(tmp_path):
    package = tmp_path / "mssl_tf"
    (package / "training").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "training" / "__init__.py").write_text("from mssl_tf.training.fit import train\n")
    (package / "training" / "config.py").write_text("def helper():\n    from mssl_tf.training import fit\n")
    (package / "training" / "fit.py").write_text("from . import config\ntrain = None\n")
    graph = import_graph(package)
    assert graph["mssl_tf.training.fit"] == {"mssl_tf.training.config"}
    assert graph["mssl_tf.training.config"] == {"mssl_tf.training.fit"}  # `from package import module`
    assert set(find_cycle(graph)) == {"mssl_tf.training.config", "mssl_tf.training.fit"}
    (package / "training" / "config.py").write_text("X = 1\n")
    assert find_cycle(import_graph(package)) is None


def test_the_method_name_check_can_tell():
    names = {"byol", "memory", "protonet"}
    assert method_names_in('if config.method in ("protonet", "maml"):', names) == [(1, ["protonet"])]
    assert method_names_in("# e.g. a BYOL encoder", names) == [(1, ["byol"])]
    assert method_names_in('help="memory write passes"', names) == []
    assert method_names_in('kind == "memory"', names) == [(1, ["memory"])]

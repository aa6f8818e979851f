"""The house rules, checked on the source: imports go one way, modules stay small, one name for one thing."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "rewards", "env", "dialogue")  # folders, installed as csrl.<folder>
# lowest first: a module may import from its own room or from a room earlier in this list
ROOMS = ("data", "rewards", "env", "dialogue.config", "dialogue.models", "dialogue.trainer", "dialogue.serving",
         "dialogue.pipeline", "dialogue.evaluation", "dialogue.cli")  # fmt: skip
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found["csrl." + ".".join(path.relative_to(ROOT).with_suffix("").parts)] = path
    return found


def _room(module: str) -> str:
    parts = module.split(".")[1:]  # drop "csrl"
    if parts[0] != "dialogue" or len(parts) == 1:
        return parts[0]
    return f"dialogue.{parts[1]}"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return [name for name in names if name == "csrl" or name.startswith("csrl.")]


MODULES = _modules()


def test_every_module_is_in_a_room():
    assert {_room(m) for m in MODULES} <= set(ROOMS) | {"dialogue.__init__"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_one_way(module):
    here = ROOMS.index(_room(module)) if _room(module) in ROOMS else len(ROOMS)
    upward = [name for name in _imports(MODULES[module]) if ROOMS.index(_room(name)) > here]
    assert not upward, f"{module} ({_room(module)}) imports from a room above it: {upward}"


def test_no_module_over_the_size_limit():
    sizes = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


def test_no_public_name_is_defined_twice():
    defined = collections.defaultdict(list)
    for module, path in MODULES.items():
        if path.name == "__init__.py":  # packages re-export their modules' names; they define none
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            defined.update({n: defined[n] + [module] for n in names if not n.startswith("_") and n != "__all__"})
    assert {name: where for name, where in defined.items() if len(where) > 1} == {}


def test_the_installed_names_are_not_generic():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "py-modules" not in pyproject, "train.py is a script of the repository, not an installed module"
    packages = pyproject.split("packages = [", 1)[1].split("]", 1)[0]
    assert all(name.strip().strip('"').startswith("csrl.") for name in packages.split(",") if name.strip())

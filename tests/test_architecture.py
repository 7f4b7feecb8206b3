"""The layout keeps its promises: pure cores, no import cycle, small files, one home for each key."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flwr_ppcdl"
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """flwr_ppcdl modules imported at module level (TYPE_CHECKING blocks and function bodies excluded)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]

    def resolve(module: str | None, level: int) -> str | None:
        if level == 0:
            return module
        base = package.split(".")
        base = base[: len(base) - (level - 1)]
        return ".".join(base + ([module] if module else []))

    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, (ast.Import, ast.ImportFrom, ast.Try)) else []:
            if isinstance(sub, ast.Import):
                names = [a.name for a in sub.names]
            elif isinstance(sub, ast.ImportFrom):
                target = resolve(sub.module, sub.level)
                if target is None:
                    continue
                names = [target] + [f"{target}.{a.name}" for a in sub.names]
            else:
                continue
            for n in names:
                while n and n not in known:
                    n = n.rsplit(".", 1)[0] if "." in n else ""
                if n and n.startswith("flwr_ppcdl") and n != name:
                    found.add(n)
    return found


@pytest.mark.parametrize("core", ["flwr_ppcdl.privacy", "flwr_ppcdl.reliability"])
def test_the_pure_cores_import_neither_flower_nor_ray(core: str) -> None:
    code = (
        f"import sys, {core}\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('flwr', 'ray', 'torch')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_library_never_imports_the_app() -> None:
    modules = _modules()
    known = set(modules)
    offenders = {
        name: sorted(i for i in _imports(name, path, known) if i.startswith("flwr_ppcdl.app"))
        for name, path in modules.items()
        if not name.startswith("flwr_ppcdl.app")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_there_is_no_import_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # a package's __init__ re-exporting its submodules is not a cycle through them
    for name in graph:
        graph[name] = {i for i in graph[name] if not name.startswith(i + ".")}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(nxt):] + [nxt])}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_file_in_the_package_is_above_the_size_limit() -> None:
    big = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"files above {MAX_LINES} lines: {big}"


@pytest.mark.parametrize("key", ["fm-release", "fm-epsilon", "fm-objective", "partition-id", "state-path"])
def test_every_message_key_is_spelt_once(key: str) -> None:
    """Keys that travel between participants and the server live in flwr_ppcdl/wire.py only."""
    spelt = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "wire.py" and any(
            isinstance(n, ast.Constant) and n.value == key for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert not spelt, f"{key!r} spelt outside wire.py in {spelt}"

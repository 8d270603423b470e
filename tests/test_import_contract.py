"""The import contract (README, "Layout"): the core (``pointillist_data``) imports neither the
model package nor the stages' command line; ``pointillist_model`` never imports ``pipelines``;
no module of the three packages takes part in an import cycle, counting the imports inside
functions too (a cycle closed by a deferred import is still a cycle); and the command line
starts without torch or colour-science (``pointillist --help`` timing: ``make bench``,
``bench_cli``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"pointillist_data": 0, "pointillist_model": 1, "pipelines": 2}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in LAYERS:
        for p in (ROOT / pkg).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body, ``if TYPE_CHECKING:``
    blocks excepted (``from pkg import sub`` counts as importing ``pkg.sub``, as Python and
    import-linter resolve it)."""
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        out: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for blk in ast.walk(tree) if isinstance(blk, ast.If)
                       and isinstance(blk.test, ast.Name) and blk.test.id == "TYPE_CHECKING"
                       for stmt in blk.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # annotations only: never imported at run time
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods]
                out.update(subs or [mod])
        graph[name] = {m for m in out if m in mods and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle_and_a_layer_breach():
    """The checker itself, on a made-up graph: a cycle of three and a self-contained pair."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(g) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_layers_point_one_way():
    graph = _imports(_modules())
    breaches = [f"{m} -> {t}" for m, ts in graph.items() for t in ts
                if LAYERS[t.split(".")[0]] > LAYERS[m.split(".")[0]]]
    assert breaches == []


def test_no_import_cycles():
    assert _cycles(_imports(_modules())) == []


def test_command_line_starts_without_torch_or_colour():
    code = "import sys, pipelines.cli; print(sorted(m for m in ('torch', 'colour') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""The batch core's shape: no import cycle touches medgen/infer, short functions, short files,
one device resolver."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "medgen"
CORE = sorted((PKG / "infer").rglob("*.py")) + [
    PKG / "io" / "geometry.py", PKG / "utils" / "device.py", PKG / "utils" / "atomic.py",
    PKG / "utils" / "paths.py", PKG / "track" / "models.py", PKG / "cli" / "_infer_common.py",
    PKG / "cli" / "denoise.py", PKG / "cli" / "upscale.py", PKG / "cli" / "translate.py"]


def _module(p: Path) -> str:
    return ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _graph() -> dict[Path, set[Path]]:
    """File-level import graph of medgen (imports inside functions and TYPE_CHECKING count)."""
    files = {_module(p): p for p in PKG.rglob("*.py")}

    def target(name: str) -> Path | None:
        while name:
            if name in files:
                return files[name]
            name = name.rpartition(".")[0]
        return None

    graph: dict[Path, set[Path]] = {p: set() for p in files.values()}
    for mod, p in files.items():
        base = mod if p.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(p.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                stem = base
                if node.level:
                    stem = ".".join(base.split(".")[: len(base.split(".")) - node.level + 1])
                mod_name = (f"{stem}.{node.module}" if node.module else stem) if node.level \
                    else (node.module or "")
                names = [f"{mod_name}.{a.name}" for a in node.names] + [mod_name]
            for n in names:
                t = target(n) if n.startswith("medgen") else None
                if t and t != p and not (t.name == "__init__.py" and p.is_relative_to(t.parent)):
                    graph[p].add(t)
    return graph


def _cycles(graph: dict[Path, set[Path]]) -> list[set[Path]]:
    """Strongly connected components with more than one file (Tarjan, iterative enough here)."""
    import sys

    sys.setrecursionlimit(10000)
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on: set[Path] = set()
    out: list[set[Path]] = []

    def visit(v: Path) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_touches_the_inference_core():
    # infer/auditor.py is the audit host's plugin (issue 14, audits as plugins): its cycle with
    # medgen.audit is broken there; every other file of medgen/infer is checked
    plugin = PKG / "infer" / "auditor.py"
    bad = [sorted(str(p.relative_to(ROOT)) for p in comp) for comp in _cycles(_graph())
           if any(p.is_relative_to(PKG / "infer") and p != plugin for p in comp)]
    assert not bad, bad


def test_functions_and_files_of_the_core_are_short():
    long_funcs, long_files = [], []
    for f in CORE:
        text = f.read_text()
        if text.count("\n") > 500:
            long_files.append(f.name)
        for n in ast.walk(ast.parse(text)):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno >= 80:
                long_funcs.append(f"{f.name}:{n.name}")
    assert not long_funcs and not long_files, (long_funcs, long_files)


def _dotted(n: ast.AST) -> str:
    parts = []
    while isinstance(n, ast.Attribute):
        parts.append(n.attr)
        n = n.value
    if isinstance(n, ast.Name):
        parts.append(n.id)
    return ".".join(reversed(parts))


def test_one_device_and_amp_resolver():
    """train, infer and synth resolve --device / --amp through medgen.utils.device only."""
    offenders = []
    for f in PKG.rglob("*.py"):
        if f == PKG / "utils" / "device.py":
            continue
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.FunctionDef) and n.name in ("resolve_device", "resolve_amp",
                                                             "amp_dtype"):
                offenders.append(f"{f.relative_to(ROOT)}:def {n.name}")
            if isinstance(n, ast.Attribute) and _dotted(n) in ("torch.autocast",
                                                               "torch.cuda.is_bf16_supported"):
                offenders.append(f"{f.relative_to(ROOT)}:{_dotted(n)}")
    assert not offenders, offenders

"""Imports point one way: a module imports only from the layers below its own (README,
Architecture). Lazy imports inside functions count too; a new module must be placed here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "crossrank"

# Lowest first. A module may import modules of lower layers only, never its own layer or above.
# `crossrank` itself is the facade (CrossEncoder and Scorer on first use) and holds __version__,
# which every layer may read.
VERSION = "crossrank"
R = "crossrank.runtime"
LAYERS: list[list[str]] = [
    [R, f"{R}.core", f"{R}.text", f"{R}.http", f"{R}.core.errors",
     f"{R}.core.choices", f"{R}.core.batching", f"{R}.core.cpu", f"{R}.core.fidelity",
     f"{R}.core.cascade"],
    # what every session shares: its info, inputs and outputs
    [f"{R}.execution"],
    [f"{R}.core.options", f"{R}.core.profiles", f"{R}.core.scores", f"{R}.execution.ovsession"],
    [f"{R}.text.encoders", f"{R}.text.windows", f"{R}.execution.session",
     f"{R}.execution.engine", f"{R}.modeldir", f"{R}.selfcheck", f"{R}.http.api"],
    [f"{R}.text.pairs", f"{R}.config", f"{R}.http.schema"],
    [f"{R}.service", f"{R}.settings"],
    [f"{R}.loader"],
    [f"{R}.scorer", f"{R}.http.server"],
    ["crossrank.crossencoder"],
    # The exporter verifies with the runtime's scorer; the runtime never imports the exporter.
    ["crossrank.export", "crossrank.export.onnxfile"],
    ["crossrank.export.manifest", "crossrank.export.corpus", "crossrank.export.checkset",
     "crossrank.export.known",
     "crossrank.export.convert",
     "crossrank.export.optimize", "crossrank.export.smooth"],
    ["crossrank.export.standin", "crossrank.export.quantize", "crossrank.export.verify"],
    ["crossrank.export.pipeline"],
    ["crossrank.rayserve", "crossrank.quickbench"],
    ["crossrank.cli"],
    ["crossrank", "crossrank.__main__", "crossrank.runtime.__main__", "crossrank.export.__main__"],
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The crossrank modules a file imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("crossrank"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "crossrank"):
            for a in node.names:  # `from crossrank.runtime import api` imports a module
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in LAYER else node.module)
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer() -> None:
    missing = sorted(set(graph()) - set(LAYER))
    assert not missing, f"place these modules in LAYERS: {missing}"


def test_imports_point_down() -> None:
    wrong = [f"{mod} (layer {LAYER[mod]}) imports {dep} (layer {LAYER[dep]})"
             for mod, deps in graph().items() for dep in sorted(deps)
             if dep in LAYER and dep not in (mod, VERSION) and LAYER[dep] >= LAYER[mod]]
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_every_import_is_a_known_module() -> None:
    unknown = sorted({dep for deps in graph().values() for dep in deps if dep not in LAYER})
    assert not unknown, f"imports of unknown crossrank modules: {unknown}"


RUNTIME = R
# The runtime's folders are layers too: the core imports only the core; tokenizing (text) and
# execution import only the core, never each other.
FOLDERS = {f"{R}.core": {f"{R}.core"}, f"{R}.text": {f"{R}.core", f"{R}.text"},
           f"{R}.execution": {f"{R}.core", f"{R}.execution"}}


def test_the_folders_are_layers() -> None:
    wrong = [f"{mod} imports {dep}" for mod, deps in graph().items() for dep in sorted(deps)
             for folder, allowed in FOLDERS.items()
             if mod.startswith(folder + ".") and dep.startswith(R + ".")
             and not any(dep == a or dep.startswith(a + ".") for a in allowed)]
    assert not wrong, "\n".join(wrong)


def chain(mod: str, g: dict[str, set[str]]) -> list[str]:
    """The longest chain of runtime imports that starts at a runtime module."""
    deps = [d for d in g.get(mod, ()) if d.startswith(RUNTIME + ".") and d != mod]
    return [mod, *max((chain(d, g) for d in deps), key=len, default=[])]


def test_no_runtime_import_chain_is_longer_than_six_modules() -> None:
    # e.g. server -> loader -> service -> windows -> options -> errors. Nine before the one
    # loader: server -> serving -> scorer -> service -> windows -> tokenization -> backends ->
    # options -> errors.
    g = graph()
    longest = max((chain(m, g) for m in g if m.startswith(RUNTIME + ".")), key=len)
    assert len(longest) <= 6, " -> ".join(m.rsplit(".", 1)[-1] for m in longest)

"""The package's imports run one way: data -> model parts -> the LightningModule -> entry layers. A static check over
every import statement (module level and inside functions), so a new upward import fails here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facenet_pl"
#: Imported by anything: errors and file helpers.
BASE = {"facenet_pl", "errors", "fileio"}
#: What runs training or opens model files: nothing below may import these.
ENTRY = {
    "training", "cli", "evaluate", "evaluate_bins", "model_files", "import_weights", "inference", "export", "report",
    "summary",
}  # fmt: skip
#: What each lower layer may import (its own package plus these); module.py only from the entry layers.
ALLOWED = {
    "data": BASE | {"data"},
    "models": BASE | {"models"},
    "mining": BASE | {"mining"},
    "losses": BASE | {"losses", "mining"},
    "evaluation": BASE | {"evaluation", "data"},
}


def _imports() -> dict[str, set[str]]:
    """``module -> facenet_pl modules it imports`` (dotted, without the package prefix)."""
    out: dict[str, set[str]] = {}
    for f in PACKAGE.rglob("*.py"):
        name = ".".join(f.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__").removesuffix("__init__")
        found = set()
        for node in ast.walk(ast.parse(f.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found |= {
                n.removeprefix("facenet_pl.") if n != "facenet_pl" else n for n in names if n.startswith("facenet_pl")
            }
        out[name or "facenet_pl"] = found
    return out


def test_lower_layers_import_nothing_above_them():
    wrong = []
    for mod, targets in _imports().items():
        allowed = ALLOWED.get(mod.split(".")[0])
        for t in targets:
            top = t.split(".")[0]
            if allowed is not None and top not in allowed:
                wrong.append(f"{mod} -> {t}")
            if top in ENTRY and mod.split(".")[0] not in ENTRY and mod not in ("facenet_pl",):
                wrong.append(f"{mod} -> {t} (an entry layer)")
            if top == "module" and mod.split(".")[0] not in ENTRY:
                wrong.append(f"{mod} -> module (only the entry layers build the LightningModule)")
    assert not wrong, "imports running back up:\n" + "\n".join(sorted(wrong))


def test_the_check_sees_imports_inside_functions():
    imports = _imports()
    assert "data.pairs" in imports["evaluation.splits"]  # a lazy import inside calibrate_threshold
    assert "module" in imports["model_files"]


def test_no_two_modules_import_each_other():
    """A pair of files importing each other (even lazily, inside a function) is one idea split in two or a helper in
    the wrong room (issue 43: data/file_index <-> data/images, errors <-> fileio)."""
    imports = _imports()
    pairs = sorted(
        f"{a} <-> {b}"
        for a, targets in imports.items()
        for b in targets
        if a < b and a in imports.get(b, set()) and b in imports
    )
    assert not pairs, "modules that import each other:\n" + "\n".join(pairs)

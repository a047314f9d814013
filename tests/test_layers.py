"""The package's folders are its layers, and imports run one way between them: utils -> data -> models, mining, losses
-> evaluation -> training (the LightningModule) -> inference (model files) -> run (train.py, eval.py) -> cli. A static
check over every import statement (module level and inside functions), so a new upward import fails here, not in
review; and no module sits at the top of the package."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facenet_pl"
#: The layers, lowest first: each may import its own folder and the folders listed for it.
LAYERS = {
    "utils": set(),
    "data": {"utils"},
    "models": {"utils"},
    "mining": {"utils"},
    "losses": {"utils", "mining"},
    "evaluation": {"utils", "data"},
    "training": {"utils", "data", "models", "mining", "losses", "evaluation"},
    "inference": {"utils", "data", "models", "mining", "losses", "evaluation", "training"},
    "run": {"utils", "data", "models", "mining", "losses", "evaluation", "training", "inference"},
    "cli": {"utils", "data", "models", "mining", "losses", "evaluation", "training", "inference", "run"},
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
        layer = mod.split(".")[0]
        for t in targets:
            top = t.split(".")[0]
            if top != layer and top != "facenet_pl" and top not in LAYERS.get(layer, set()):
                wrong.append(f"{mod} -> {t}")
    assert not wrong, "imports running back up:\n" + "\n".join(sorted(wrong))


def test_every_module_lives_in_a_layer_folder():
    """No module at the top of the package (issue 43: 22 of them sat beside the folders): each folder is one layer."""
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert not top, f"modules at the top of facenet_pl/: {top}"
    folders = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert folders == sorted(LAYERS), folders


def test_the_check_sees_imports_inside_functions():
    imports = _imports()
    assert "data.pairs" in imports["evaluation.splits"]  # a lazy import inside calibrate_threshold
    assert "training.module" in imports["inference.model_files"]


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

"""``python -m facenet_pl.utils.install_check``: after an install, torch and torchvision load together and every
optional extra that is installed imports; otherwise one line each saying what to do (``make`` runs it).

A torchvision from another index than torch (a CUDA build beside a CPU torch, or another release) imports but
fails at its first operator (``operator torchvision::nms does not exist``), deep inside the first training run;
this finds it in a second.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

#: Modules of the optional extras: (module, the extra that installs it).
EXTRAS = (
    ("facenet_pytorch", "align"),
    ("cv2", "align"),
    ("skimage", "align"),
    ("onnx", "export"),
    ("onnxruntime", "export"),
    ("tensorboard", "weights"),
)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def problems() -> list[str]:
    """One line per thing that does not work."""
    out = []
    try:
        import torch
        import torchvision

        torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)  # the first compiled operator a run uses
    except Exception as e:  # noqa: BLE001 - any failure here is the install's
        versions = ", ".join(
            f"{m} {getattr(sys.modules[m], '__version__', '?')}" for m in ("torch", "torchvision") if m in sys.modules
        )
        out.append(
            f"torch and torchvision do not work together ({versions}: {_first_line(e)}): install both from one index "
            "in one command, e.g. pip install --force-reinstall torch torchvision --index-url "
            "https://download.pytorch.org/whl/cpu (or both from PyPI)"
        )
    for module, extra in EXTRAS:
        if importlib.util.find_spec(module) is None:
            continue  # that extra is not installed
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001
            out.append(f"{module} (extra [{extra}]) is installed but does not import ({_first_line(e)}): "
                       f"pip install --force-reinstall -e '.[{extra}]'")  # fmt: skip
    return out


def main() -> int:
    found = problems()
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    if not found:
        import torch
        import torchvision

        print(f"install check: torch {torch.__version__} and torchvision {torchvision.__version__} work together")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

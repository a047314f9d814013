"""``python -m facenet_pl.install_check`` (run by ``make`` after installing): passes here, and names a torchvision
that does not work beside torch, and an extra that does not import, in one line each."""

from __future__ import annotations

from facenet_pl import install_check


def test_this_environment_passes(capsys):
    assert install_check.main() == 0 and "work together" in capsys.readouterr().out


def test_a_torchvision_from_another_index_is_one_line(monkeypatch):
    import torchvision

    def nms(*a, **k):  # what a CUDA torchvision beside a CPU torch raises at its first operator
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(torchvision.ops, "nms", nms)
    found = install_check.problems()
    assert len(found) == 1 and "operator torchvision::nms does not exist" in found[0] and "one index" in found[0]


def test_an_extra_that_does_not_import_is_named(monkeypatch):
    real = install_check.importlib.import_module

    def broken(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("libonnxruntime.so: cannot open shared object file")
        return real(name, *a, **k)

    monkeypatch.setattr(install_check.importlib, "import_module", broken)
    found = install_check.problems()
    assert len(found) == 1 and found[0].startswith("onnxruntime (extra [export])") and ".[export]" in found[0]

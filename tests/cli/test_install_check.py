"""``python -m facenet_pl.utils.install_check`` (run by ``make`` after installing): passes here, and names a torchvision
that does not work beside torch, and an extra that does not import, in one line each."""

from __future__ import annotations

import os

from facenet_pl.utils import install_check


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


def test_the_suite_ends_when_make_is_killed(tmp_path):
    """`make test` killed alone (a timeout, a CI runner) must not leave pytest running: with the variable the
    Makefile sets, tests/conftest.py's pytest_configure has the process get SIGTERM when its parent dies (kill -9
    here); without it, it runs on (the check can fail). The child runs that hook, not a whole pytest (~3 s less)."""
    import signal
    import subprocess
    import sys
    import time

    from ..helpers import ROOT

    started = tmp_path / "started"
    child_code = (
        "import pathlib, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import tests.conftest as c\n"
        "c.pytest_configure(None)\n"
        f"pathlib.Path({str(started)!r}).write_text('1')\n"
        "time.sleep(60)\n"
    )

    def survives(die_with_parent: bool) -> bool:
        started.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "FACENET_PL_TESTS_DIE_WITH_PARENT"}  # make test sets it
        if die_with_parent:
            env["FACENET_PL_TESTS_DIE_WITH_PARENT"] = "1"
        cmd = f"{sys.executable} -c {_quote(child_code)} > /dev/null 2>&1 & echo $!; wait"
        parent = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        child = int(parent.stdout.readline())
        try:
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert started.exists(), "the child never started"
            parent.send_signal(signal.SIGKILL)
            parent.wait()
            for _ in range(20):  # a process with the signal ends within milliseconds of its parent
                time.sleep(0.1)
                try:
                    os.kill(child, 0)
                except ProcessLookupError:
                    return False
                if open(f"/proc/{child}/stat").read().split()[2] == "Z":  # a zombie has ended
                    return False
            return True
        finally:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    assert not survives(die_with_parent=True)
    assert survives(die_with_parent=False)  # the control: without the signal the orphan runs on


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)

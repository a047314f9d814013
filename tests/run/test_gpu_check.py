"""benchmarks/gpu_check.py, the one script a lent GPU runs (issue 31), smoke-tested at tiny sizes on the CPU so it
cannot rot: every section runs and reports, the table is printed, the results are written."""

from __future__ import annotations

import importlib.util
import json

from ..helpers import ROOT


def test_gpu_check_runs_every_section_on_the_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    code = gpu_check.main(["--cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 0, [r for r in results if r["what"] == "FAILED"]
    assert {r["section"] for r in results} == set(gpu_check.SECTIONS)
    assert not [r for r in results if r["what"] == "FAILED"]
    assert out.rstrip().splitlines()[-len(results) - 2] == "| section | what | value | note |"  # the table is last
    assert (tmp_path / "syncs" / "syncs.json").is_file()

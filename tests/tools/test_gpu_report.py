"""The GPU protocol (benchmarks/gpu_check.sh -> python -m wmkernels gpu-report)
in dry-run mode: the same install, test and benchmark plumbing as on a lent GPU,
with tiny sizes and one test file, so it is known to work before a GPU is spent on it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wmkernels.tools import gpu_report

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow(minutes=3)  # started early (conftest)
@pytest.mark.skipif(os.environ.get(gpu_report.INSIDE_ENV) == "1",
                    reason="this suite is being run by the protocol itself")
def test_gpu_check_dry_run_writes_json_and_markdown(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHON"] = sys.executable
    # --no-install: a test never rebuilds the package in the user's source tree
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--no-install", "--dry-run",
                           "--repeat", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900,
                          env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "--no-install: using the installed wmkernels" in done.stdout
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    assert report["dry_run"] and report["machine"]["torch"] == torch.__version__
    assert report["tests"]["exit_code"] == 0 and "passed" in report["tests"]["summary"]
    names = [g["name"] for g in report["bench"]]
    assert names == [g.name for g in gpu_report.plan(dry_run=True)]
    for group in report["bench"]:
        assert group["skipped"] is None and group["results"], group
        impls = {r["impl"] for r in group["results"]}
        assert "reference" in impls
        assert "compile(ref step)" in impls or group["name"].startswith("lstm_cell")  # a step: nothing to loop
        assert all(r["error"] is None and r["ms"] > 0 for r in group["results"])
    lstm = [r for g in report["bench"] if g["name"].startswith("lstm_sequence") for r in g["results"]]
    assert {"torch.nn.LSTM", "aten"} <= {r["impl"] for r in lstm}
    page = (tmp_path / "gpu-report.md").read_text()
    assert "DRY RUN" in page and "## Tests" in page and "compile(ref step)" in page


def test_full_plan_is_the_issue_protocol():
    groups = gpu_report.plan(dry_run=False)
    assert [g.dtype for g in groups if g.ops_wanted == ("lstm_sequence",)] == ["float16", "bfloat16"]
    for g in groups:
        assert {k: g.sizes[k] for k in "TBIH"} == dict(T=1024, B=16, I=768, H=768)
    assert [g.dtype for g in groups if g.ops_wanted == ("lstm_cell",)] == ["bfloat16"]
    wm = [(g.dtype, g.sizes["S"]) for g in groups if g.ops_wanted == ("wm_lstm_sequence",)]
    assert wm == [("bfloat16", 32), ("bfloat16", 128), ("float16", 32), ("float16", 128)]
    assert groups[-1].ops_wanted == ("persistent_sweep",) and groups[-1].sizes["S"] == 32  # last: what is left
    assert all(g.ops_wanted != ("persistent_sweep",) for g in gpu_report.plan(dry_run=True))  # needs a GPU


def test_groups_past_the_budget_are_listed_as_skipped():
    groups = gpu_report.plan(dry_run=True)
    gpu_report.run_bench(groups, "cpu", deadline=0.0, repeat=1)
    assert all(g.skipped and "out of time" in g.skipped and not g.results for g in groups)
    page = gpu_report.markdown({"machine": {"cpu": "x", "torch": "t"}, "date": "d", "dry_run": True,
                                "budget_s": 1, "seconds": 1, "bench": [g.__dict__ for g in groups],
                                "tests": {"command": "c", "exit_code": None, "seconds": 0,
                                          "summary": "skipped", "failures": []}})
    assert page.count("skipped: out of time") == len(groups)


@pytest.mark.parametrize("dry_run, backend", [(True, "aot_eager"), (False, "inductor")])
def test_the_dry_run_compiles_the_reference_step_without_inductor(monkeypatch, dry_run, backend):
    """On the GPU the compiled baseline is inductor's; the dry run checks the
    row's plumbing with aot_eager (no C++ generated on the CPU, cold: ~45 s)."""
    asked = []
    monkeypatch.setattr(gpu_report.bench, "run_benchmarks", lambda *a, **k: asked.append(k) or [])
    gpu_report.run_bench(gpu_report.plan(dry_run=True)[:1], "cpu", float("inf"), 1, dry_run=dry_run)
    assert asked and all(k["compiled"] and k["compile_backend"] == backend for k in asked)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_refuses_a_full_run_without_a_gpu(tmp_path):
    assert gpu_report.main(["--out", str(tmp_path)]) == 2

"""The command line and environment tools: check refuses to pass when nothing
was checked, availability takes strings, bad environment values are reported."""
import os
import subprocess
import sys

import pytest
import torch

import wmkernels
from wmkernels.__main__ import main
from wmkernels.backends import environment_problems


def test_check_fails_when_every_case_was_skipped(capsys):
    code = main(["check", "--backend", "cpu", "--device", "meta"])  # a device no backend runs
    out = capsys.readouterr().out
    assert code == 1 and "nothing was checked" in out


def test_check_counts_what_it_checked(capsys):
    assert main(["check", "--backend", "reference", "--dtype", "float64"]) == 0
    assert "checks passed" in capsys.readouterr().out


def test_availability_takes_a_string():
    assert wmkernels.availability("cpu") == wmkernels.availability(torch.device("cpu"))
    assert wmkernels.availability()["reference"] is None


def test_bad_environment_values_are_named(monkeypatch, capsys):
    monkeypatch.setenv("WMKERNELS_BACKEND", "cuda2")
    monkeypatch.setenv("WMKERNELS_CPU_CAPABILITY", "avx9000")
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "fastest")
    problems = environment_problems()
    assert len(problems) == 3 and "cuda2" in problems[0] and "avx9000" in problems[1]
    assert "WMKERNELS_TRITON_SCHEDULE='fastest'" in problems[2]
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "environment: WMKERNELS_BACKEND='cuda2'" in out and "avx9000" in out and "'fastest'" in out
    monkeypatch.setenv("WMKERNELS_BACKEND", "reference")
    monkeypatch.setenv("WMKERNELS_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "persistent")
    assert environment_problems() == []
    assert main(["info"]) == 0
    assert "triton schedule of lstm_sequence: persistent" in capsys.readouterr().out


def test_bad_environment_is_reported_at_import():
    env = dict(os.environ, WMKERNELS_CPU_CAPABILITY="sse9")
    done = subprocess.run([sys.executable, "-c", "import wmkernels"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "WMKERNELS_CPU_CAPABILITY='sse9'" in done.stderr


def test_check_names_an_excused_row_and_the_contract():
    from wmkernels.__main__ import check_verdict
    from wmkernels.testing import Row

    assert check_verdict([Row("out[0]", 1e-6, 1e-5)]) == "ok"
    verdict = check_verdict([Row("out[0]", 1e-6, 1e-5), Row("grad[x]", 5e-5, 1e-5, floor=1e-5)])
    assert verdict.startswith("ok, excused: grad[x] 5.00e-05") and "floor 1.00e-05" in verdict
    assert check_verdict([Row("grad[x]", 2e-5, 1e-5, floor=0.9e-6)]).startswith("FAIL grad[x]")


def test_check_fails_when_a_backend_asked_for_checked_nothing(monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # triton cannot run CPU tensors now
    code = main(["check", "--backend", "reference", "--backend", "triton", "--dtype", "float32", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 1 and "nothing was checked on triton" in out
    assert out.count("skipped") == 1  # the reason once, not once per case


def test_check_prints_whole_case_descriptions(capsys):
    assert main(["check", "--backend", "reference", "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "write_mode=gated lengths=[" in out and "{'" not in out


def test_interpreter_with_a_breaking_numpy_is_named(monkeypatch, capsys):
    pytest.importorskip("triton")
    import numpy

    from wmkernels.backends import BACKENDS

    monkeypatch.setattr(numpy, "__version__", "2.4.0")
    monkeypatch.setattr("triton.__version__", "3.6.0")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    reason = BACKENDS["triton"].device_reason(torch.device("cpu"))
    assert reason and "numpy 2.4.0" in reason and "pip install 'numpy<2.4'" in reason
    assert main(["check", "--backend", "triton", "--device", "cpu", "--dtype", "float32"]) == 1
    assert "numpy 2.4.0" in capsys.readouterr().out
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # info: said before the user turns the interpreter on
    assert main(["info"]) == 0
    assert "numpy 2.4.0" in capsys.readouterr().out
    monkeypatch.setattr(numpy, "__version__", "2.3.5")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert BACKENDS["triton"].device_reason(torch.device("cpu")) is None

"""The command line and environment tools: check refuses to pass when nothing
was checked, availability takes strings, bad environment values are reported."""
import os
import subprocess
import sys

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

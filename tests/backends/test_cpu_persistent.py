"""The persistent thread team of the cpu backend's lstm_sequence
(csrc/cpu/team.h, persistent_lstm.h): results bit for bit the same for any
thread count (forward, inference and backward, with and without lengths, in
each instruction-set copy), the team really runs with more than one thread,
concurrent calls from Python threads stay correct, and the inference path
saves nothing.
"""
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from wmkernels import ops
from wmkernels.backends import BACKENDS

pytestmark = pytest.mark.skipif(BACKENDS["cpu"].device_reason(torch.device("cpu")) is not None,
                                reason="wmkernels._C not built")
ROOT = Path(__file__).resolve().parents[2]


def _inputs(T, B, I, H, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(T, B, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]
    return [torch.randn(*s, generator=g, dtype=dtype) * (0.5 if len(s) == 2 and s[0] == 4 * H else 1)
            for s in shapes]


def _run(tensors, lengths, grad):
    """(outputs and, with grad, every input gradient) of one cpu call, and the team size."""
    ins = [t.clone().requires_grad_(grad) for t in tensors]
    with torch.set_grad_enabled(grad):
        y, h, c = ops.lstm_sequence(*ins, lengths=lengths, backend="cpu")
        out = [y, h, c]
        if grad:
            (y.square().sum() + (h * 1.5).sum() + (c * 0.7).sum()).backward()
            out += [t.grad for t in ins]
    return [o.detach() for o in out], torch.ops.wmkernels.cpu_last_team_size()


CASES = [(7, 1, 5, 65), (6, 2, 9, 40), (5, 3, 16, 33), (4, 7, 3, 17)]


def check_thread_invariance(dtypes=(torch.float32, torch.float64), threads=(1, 2, 3)):
    """Raises AssertionError naming the first output whose bits depend on the thread count."""
    before = torch.get_num_threads()
    try:
        for dtype in dtypes:
            for T, B, I, H in CASES:
                tensors = _inputs(T, B, I, H, dtype)
                for lengths in (None, torch.tensor([T] + [max(0, T - 2 - b) for b in range(B - 1)])):
                    for grad in (False, True):
                        results = []
                        for n in threads:
                            torch.set_num_threads(n)
                            results.append(_run(tensors, lengths, grad))
                        base = results[0][0]
                        for n, (outs, team) in zip(threads, results):
                            for i, (a, b) in enumerate(zip(base, outs)):
                                assert torch.equal(a, b), (
                                    f"output {i} differs between 1 and {n} threads "
                                    f"({dtype}, T,B,I,H={T, B, I, H}, lengths={lengths}, grad={grad})")
                            U = 8 if dtype == torch.float64 else 16  # at most: AVX-512 panels
                            assert 1 <= team <= n
                            if n > 1 and H > U:
                                assert team > 1, f"the team ran on {team} thread(s) with {n} allowed"
    finally:
        torch.set_num_threads(before)


def test_bits_do_not_depend_on_the_thread_count():
    check_thread_invariance()


@pytest.mark.parametrize("wanted", ["avx2", "default"])
def test_bits_do_not_depend_on_the_thread_count_in_each_copy(wanted):
    env = {**os.environ, "WMKERNELS_CPU_CAPABILITY": wanted,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = ("import torch; from tests.backends import test_cpu_persistent as t; "
              "t.check_thread_invariance(dtypes=(torch.float32,)); "
              "print(torch.ops.wmkernels.cpu_capability())")
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    order = ["default", "avx2", "avx512", "avx512_bf16"]
    best = torch.ops.wmkernels.cpu_capability()
    assert proc.stdout.split()[-1] == order[min(order.index(wanted), order.index(best))]


def test_concurrent_calls_from_python_threads():
    """Several Python threads call at once (each gets its own OpenMP team, the
    cores oversubscribed): every result is the one of a call made alone."""
    tensors = _inputs(6, 3, 8, 70, torch.float32)
    expected, _ = _run(tensors, None, True)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(_run(tensors, None, True)[0])
        except Exception as error:  # reported below, with the thread's traceback lost
            errors.append(error)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    assert len(results) == 20
    for outs in results:
        assert all(torch.equal(a, b) for a, b in zip(expected, outs))


def test_inference_saves_nothing():
    """With no input wanting a gradient the cpu backend runs the inference op:
    nothing is kept for a backward, and the outputs are those of training."""
    tensors = _inputs(5, 2, 4, 20, torch.float32)
    outputs, saved, _ = BACKENDS["cpu"].forward("lstm_sequence", tensors, {"lengths": None}, (False,) * 7)
    assert saved == ()
    train, saved_train, _ = BACKENDS["cpu"].forward("lstm_sequence", tensors, {"lengths": None},
                                                   (True,) + (False,) * 6)
    assert len([t for t in saved_train if t is not None]) == 8  # x, h0, c0, w_ih, w_hh, act, cs, y
    assert all(torch.equal(a, b) for a, b in zip(outputs, train))


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ for the ThreadSanitizer build")
def test_team_under_thread_sanitizer(tmp_path):
    """The team and its barrier (csrc/cpu/team.cpp) built with
    -fsanitize=thread run the h-exchange of the persistent loops with 1, 2, 3
    and 8 threads and two racing calls: right results and no data race (TSan
    exits 66 on a report). A barrier that returned at once is reported."""
    exe = tmp_path / "team_tsan"
    subprocess.run(["g++", "-std=c++17", "-fsanitize=thread", "-O1", "-g", f"-I{ROOT / 'csrc'}",
                    str(ROOT / "tests/cpp/tsan/test_team_tsan.cpp"), str(ROOT / "csrc/cpu/team.cpp"),
                    "-o", str(exe), "-pthread"], check=True, timeout=300)
    env = {**os.environ, "TSAN_OPTIONS": "halt_on_error=1 exitcode=66"}
    proc = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "0 failures" in proc.stdout


def test_measured_inference_rule_applies_only_to_inference_where_measured(monkeypatch):
    """A MEASURED_FASTER rule marked inference=True puts its backend before
    torch's own for calls where nothing wants a gradient, at the sizes it
    covers, and nowhere else."""
    from wmkernels.backends import MeasuredFaster, auto_candidates

    rule = MeasuredFaster("lstm_sequence", "cpu", "cpu", (torch.float32,), lambda s: s["H"] >= 256,
                          "test: a made-up measurement", inference=True)
    monkeypatch.setattr("wmkernels.backends.MEASURED_FASTER", [rule])
    cpu = torch.device("cpu")
    big, small = dict(T=8, B=4, I=256, H=256), dict(T=8, B=4, I=64, H=64)
    first = auto_candidates("lstm_sequence", cpu, torch.float32, big, inference=True)[0]
    assert first[0] == "cpu" and "test: a made-up measurement" in first[1]
    assert auto_candidates("lstm_sequence", cpu, torch.float32, small, inference=True)[0][0] == "aten"
    assert auto_candidates("lstm_sequence", cpu, torch.float64, big, inference=True)[0][0] == "aten"
    assert auto_candidates("lstm_sequence", torch.device("cuda"), torch.float32, big)[0][0] == "aten"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_runs_as_torch_does():
    """The team runs on torch's own OpenMP threads, so a child forked after
    they exist is in the state torch's own ops are in: GNU OpenMP cannot
    start a parallel region there (torch's matmul hangs too), and a child
    that sets one thread, as DataLoader workers do, runs our kernel with the
    parent's bits. Forked from a fresh interpreter, not from pytest; an alarm
    turns a hang into a failure."""
    script = f"""
import os, signal, sys, torch
sys.path[:0] = {[str(ROOT)]!r}
from tests.backends import test_cpu_persistent as t
torch.set_num_threads(2)
tensors = t._inputs(5, 3, 8, 64, torch.float32)
expected, team = t._run(tensors, None, False)
assert team == 2
pid = os.fork()
if pid == 0:
    signal.alarm(60)
    torch.set_num_threads(1)
    got, team = t._run(tensors, None, False)
    os._exit(0 if team == 1 and all(torch.equal(a, b) for a, b in zip(expected, got)) else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

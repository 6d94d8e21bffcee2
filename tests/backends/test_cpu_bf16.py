"""bfloat16 on the cpu backend (contract §3, §4): lstm_sequence through its bf16
kernels (avx512_bf16: bf16 weights and h, float32 sums, cell state and
pointwise step), lstm_cell and wm_lstm_sequence computed in float32 on bf16
tensors. Every output and gradient against the float64 reference with
poisoned outputs at awkward sizes, bf16 results and gradients, bits that do
not depend on the thread count, and a clear error naming avx512_bf16 where the
instruction set is missing or capped (WMKERNELS_CPU_CAPABILITY).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wmkernels
from wmkernels import ops, testing
from wmkernels.backends import BACKENDS

pytestmark = pytest.mark.skipif(BACKENDS["cpu"].device_reason(torch.device("cpu")) is not None,
                                reason="wmkernels._C not built")
ROOT = Path(__file__).resolve().parents[2]
BF16 = torch.bfloat16


def _has_bf16_kernels() -> bool:
    return BACKENDS["cpu"].device_reason(torch.device("cpu")) is None and \
        torch.ops.wmkernels.cpu_capability() == "avx512_bf16"


needs_bf16 = pytest.mark.skipif(not _has_bf16_kernels(),
                                reason="this CPU lacks avx512_bf16 (test_bf16_refused_without_avx512_bf16 "
                                       "checks the error instead)")


def _check(case):
    rows = testing.compare(case, "cpu", BF16)
    bad = [f"{r.name}: {r.error:.2e} > {r.tolerance:.0e}" for r in rows if not r.passed]
    assert not bad, f"{case.describe()}: " + "; ".join(bad)


# (T, B, I, H): H = 1, 3, 65 (a partial panel of 16), B = 1, T = 1, odd I (a
# lone last k pair), more rows than a tile (6).
SEQUENCE_SIZES = [(1, 1, 1, 1), (5, 1, 3, 3), (4, 3, 7, 65), (3, 8, 16, 33), (6, 13, 5, 17),
                  (1, 2, 4, 3)]


@needs_bf16
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("T,B,I,H", SEQUENCE_SIZES)
def test_lstm_sequence_bf16_matches_the_reference(T, B, I, H, with_lengths):
    _check(testing.random_case("lstm_sequence", T=T, B=B, I=I, H=H, with_lengths=with_lengths))


@needs_bf16
def test_lstm_sequence_bf16_without_bias():
    _check(testing.random_case("lstm_sequence", T=4, B=3, I=5, H=19, with_bias=False))


@pytest.mark.parametrize("B,H", [(1, 1), (2, 3), (5, 65)])
def test_lstm_cell_bf16_matches_the_reference(B, H):
    _check(testing.random_case("lstm_cell", B=B, H=H))


@pytest.mark.parametrize("write_mode", ["fifo", "gated"])
@pytest.mark.parametrize("T,B,H,S,D", [(1, 1, 1, 1, 1), (4, 3, 3, 4, 5), (5, 2, 65, 3, 7)])
def test_wm_lstm_sequence_bf16_matches_the_reference(T, B, H, S, D, write_mode):
    _check(testing.random_case("wm_lstm_sequence", T=T, B=B, I=4, H=H, S=S, D=D,
                               write_mode=write_mode, with_lengths=B >= 3))


def _grads_are_bf16(op, case):
    inputs = [t.to(BF16).requires_grad_() for t in case.tensors.values()]
    outputs = case.run(inputs, "cpu")
    outputs = [o for o in outputs if isinstance(o, torch.Tensor)]
    assert all(o.dtype == BF16 for o in outputs), (op, [o.dtype for o in outputs])
    sum(o.float().sum() for o in outputs).backward()
    assert all(t.grad is None or t.grad.dtype == BF16 for t in inputs), (op, [t.grad for t in inputs])
    assert any(t.grad is not None for t in inputs)


@pytest.mark.parametrize("op", ["lstm_cell", "lstm_sequence", "wm_lstm_sequence"])
def test_bf16_outputs_and_gradients_are_bf16(op):
    if op == "lstm_sequence" and not _has_bf16_kernels():
        pytest.skip("needs avx512_bf16")
    _grads_are_bf16(op, testing.random_case(op, T=3, B=2, I=5, H=7, S=3, D=4))


@needs_bf16
def test_lstm_sequence_bf16_thread_invariance():
    """1, 2 and 3 threads give the same bits: forward, inference and backward,
    with and without lengths."""
    from tests.backends.test_cpu_persistent import check_thread_invariance
    check_thread_invariance(dtypes=(BF16,))


@needs_bf16
def test_bf16_inference_saves_nothing_and_equals_training():
    """No input wants a gradient: nothing saved, and the bits of the forward
    that saves act and cs (float32, as for a float32 call: T·B·5H floats)."""
    case = testing.random_case("lstm_sequence", T=5, B=4, I=6, H=20)
    tensors = [t.to(BF16) for t in case.tensors.values()]
    cpu = BACKENDS["cpu"]
    outputs, saved, _ = cpu.forward("lstm_sequence", tensors, {"lengths": None}, (False,) * 7)
    assert saved == ()
    train, saved_train, _ = cpu.forward("lstm_sequence", tensors, {"lengths": None}, (True,) + (False,) * 6)
    assert all(torch.equal(a, b) for a, b in zip(outputs, train))
    act, cs = saved_train[5], saved_train[6]
    assert act.dtype == cs.dtype == torch.float32 and act.shape == (5, 4, 80) and cs.shape == (5, 4, 20)


@needs_bf16
@pytest.mark.parametrize("B", [2, 7])  # the projection of all steps first; fused into each step
def test_bf16_nan_in_gives_nan_out(B):
    case = testing.random_case("lstm_sequence", T=3, B=B, I=4, H=18)
    x, *rest = [t.to(BF16) for t in case.tensors.values()]
    x[1, 0, 2] = float("nan")
    y, h, c = ops.lstm_sequence(x, *rest, backend="cpu")
    assert torch.isnan(y[1:, 0]).all() and not torch.isnan(y[:, 1]).any() and not torch.isnan(y[0]).any()
    assert torch.isnan(h[0]).all() and torch.isnan(c[0]).all()


_CAPPED_SCRIPT = """
import torch, wmkernels
import wmkernels
from wmkernels import ops, testing
from wmkernels.backends import BackendUnavailableError
print(torch.ops.wmkernels.cpu_capability())
case = testing.random_case("lstm_sequence", T=3, B=2, I=4, H=5)
tensors = [t.to(torch.bfloat16) for t in case.tensors.values()]
try:
    ops.lstm_sequence(*tensors, backend="cpu")
except BackendUnavailableError as error:
    assert "avx512_bf16" in str(error), error
    print("refused")
try:
    torch.ops.wmkernels.lstm_sequence_inference(*tensors, None)
except RuntimeError as error:
    assert "avx512_bf16" in str(error), error
    print("kernel-refused")
choice = wmkernels.explain("lstm_sequence", dtype=torch.bfloat16, backend="cpu", T=3, B=2, I=4, H=5)
assert choice.backend is None and "avx512_bf16" in str(choice), str(choice)
y, h, c = ops.lstm_sequence(*tensors)  # auto takes another backend
assert y.dtype == torch.bfloat16
for op in ("lstm_cell", "wm_lstm_sequence"):  # float32 inside: any CPU
    bad = [r for r in testing.compare(testing.random_case(op, H=3), "cpu", torch.bfloat16) if not r.passed]
    assert not bad, (op, bad)
print("ok")
"""


@pytest.mark.parametrize("wanted", ["avx512", "avx2"])
def test_bf16_refused_without_avx512_bf16(wanted):
    """With the instruction set capped below avx512_bf16 (or a CPU without it)
    lstm_sequence in bf16 is refused on the cpu backend, naming avx512_bf16,
    by the backend (explain says why; auto runs torch's own) and by the kernel
    entry point; lstm_cell and wm_lstm_sequence still run (float32 inside)."""
    env = {**os.environ, "WMKERNELS_CPU_CAPABILITY": wanted,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _CAPPED_SCRIPT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.split()
    assert lines[0] != "avx512_bf16" and lines[1:] == ["refused", "kernel-refused", "ok"], lines


def test_memory_ops_refuse_bf16_on_cpu():
    reason = BACKENDS["cpu"].case_reason("wm_read", torch.device("cpu"), BF16)
    assert reason is not None and "float32, float64 only" in reason


@needs_bf16
def test_bf16_kernel_entry_points_check_their_arguments():
    """Called directly, the C++ entry points refuse mixed bf16/float32 inputs and a
    bf16 act (a bf16 forward keeps act and cs in float32)."""
    case = testing.random_case("lstm_sequence", T=3, B=2, I=4, H=5)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = [t.to(BF16) for t in case.tensors.values()]
    with pytest.raises(RuntimeError, match="w_hh has dtype"):
        torch.ops.wmkernels.lstm_sequence_forward(x, h0, c0, w_ih, w_hh.float(), b_ih, b_hh, None)
    y, h_n, c_n, act, cs = torch.ops.wmkernels.lstm_sequence_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, None)
    assert (y.dtype, h_n.dtype, c_n.dtype, act.dtype, cs.dtype) == (BF16, BF16, BF16, torch.float32, torch.float32)
    grads = (torch.randn_like(y), torch.randn_like(h_n), torch.randn_like(c_n))
    with pytest.raises(RuntimeError, match="act of a bfloat16 forward must be float32"):
        torch.ops.wmkernels.lstm_sequence_backward(*grads, x, h0, c0, w_ih, w_hh, act.to(BF16), cs, y, None)
    out = torch.ops.wmkernels.lstm_sequence_backward(*grads, x, h0, c0, w_ih, w_hh, act, cs, y, None)
    assert all(g.dtype == BF16 for g in out)


@pytest.mark.parametrize("inference", [False, True])
def test_auto_keeps_torch_own_lstm_for_bf16(inference):
    """bf16 lstm_sequence on CPU: auto takes torch's own LSTM, training and inference
    (the cpu backend was measured slower there); named, the cpu backend runs it."""
    choice = wmkernels.explain("lstm_sequence", dtype=BF16, T=256, B=16, I=256, H=256, inference=inference)
    assert choice.backend == "aten", str(choice)
    if _has_bf16_kernels():
        assert wmkernels.explain("lstm_sequence", dtype=BF16, backend="cpu", T=3, B=2, I=4, H=5).backend == "cpu"


@needs_bf16
@pytest.mark.parametrize("B", [3, 8])
def test_bf16_padding_past_lengths_influences_nothing(B):
    """NaN in x past a row's length reaches no output and no gradient (contract §1.2),
    with the projection of all steps first (B < 6) and fused into the steps."""
    case = testing.random_case("lstm_sequence", T=5, B=B, I=3, H=20)
    lengths = torch.tensor([5, 0] + [2] * (B - 2))
    x, *rest = [t.to(BF16) for t in case.tensors.values()]
    for b, n in enumerate(lengths.tolist()):
        x[n:, b] = float("nan")
    inputs = [x.requires_grad_()] + [t.requires_grad_() for t in rest]
    y, h, c = ops.lstm_sequence(*inputs, lengths=lengths, backend="cpu")
    assert all(torch.isfinite(o).all() for o in (y, h, c))
    (y.float().sum() + h.float().sum() + c.float().sum()).backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs)

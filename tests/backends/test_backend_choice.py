"""auto never slower than what the user had (torch's own LSTM on CUDA unless a
kernel was measured faster), explain() and the choice log, the aten backend,
and where lengths are checked (no device-to-host sync for CPU lengths)."""
import logging
import re
from pathlib import Path

import pytest
import torch

import wmkernels
from wmkernels import ops, testing
from wmkernels.backends import (BACKENDS, ENV_VAR, MEASURED_FASTER, BackendUnavailableError, MeasuredFaster,
                                auto_candidates, explain, select_backend)

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
BENCH = dict(T=1024, B=16, I=768, H=768)


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    return monkeypatch


# --------------------------------------------------------------------------- auto on CUDA

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_lstm_sequence_goes_to_torch_first(dtype):
    names = [name for name, _ in auto_candidates("lstm_sequence", CUDA, dtype, BENCH)]
    assert names[0] == "aten" and names[-1] == "reference" and len(names) == len(set(names))
    assert "cuDNN" in dict(auto_candidates("lstm_sequence", CUDA, dtype, BENCH))["aten"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_lstm_cell_goes_to_torch_first(dtype):
    """Nothing measured the triton cell (Python launch overhead included) against
    torch's fused cell: auto keeps torch's."""
    candidates = auto_candidates("lstm_cell", CUDA, dtype, {"B": 16, "H": 768})
    assert [n for n, _ in candidates] == ["aten", "triton", "reference"]
    assert "ATen on CUDA" in candidates[0][1]


def test_cuda_memory_ops_keep_the_kernel_order():
    for op in sorted(set(ops.OP_INPUTS) - {"lstm_sequence", "lstm_cell"}):
        assert [n for n, _ in auto_candidates(op, CUDA, torch.float16)] == ["triton", "reference"]


def test_measured_rule_promotes_a_kernel_only_where_it_applies(monkeypatch):
    rule = MeasuredFaster("lstm_sequence", "triton", "cuda", (torch.float16,),
                          lambda s: s["B"] >= 256, "test: a made-up measurement")
    monkeypatch.setattr("wmkernels.backends.MEASURED_FASTER", [rule])
    big = auto_candidates("lstm_sequence", CUDA, torch.float16, dict(BENCH, B=512))
    assert big[0] == ("triton", "measured faster than torch's own kernel for training (forward and backward) "
                                "at this shape (test: a made-up measurement)")
    assert big[1][0] == "aten"
    for dtype, sizes in ((torch.float16, BENCH), (torch.bfloat16, dict(BENCH, B=512))):
        assert auto_candidates("lstm_sequence", CUDA, dtype, sizes)[0][0] == "aten"
    # the rule is for CUDA: on CPU torch's own LSTM (oneDNN) stays first
    assert auto_candidates("lstm_sequence", CPU, torch.float16, dict(BENCH, B=512))[0][0] == "aten"


def test_cpu_rules_hold_only_on_the_machine_class_measured(monkeypatch):
    """The CPU grid was measured with the AVX-512 tile kernels; capped to AVX2
    the same cells ran slower than torch, so there auto keeps torch's own."""
    import wmkernels.backends as backends

    sizes = dict(T=128, B=1, I=256, H=256)  # a cell of the grid, inference
    monkeypatch.setattr(backends, "cpu_machine", lambda: "avx512_bf16")
    assert auto_candidates("lstm_sequence", CPU, torch.float32, sizes, inference=True)[0][0] == "cpu"
    monkeypatch.setattr(backends, "cpu_machine", lambda: "avx2")
    assert auto_candidates("lstm_sequence", CPU, torch.float32, sizes, inference=True)[0][0] == "aten"


def test_bf16_cpu_rules_take_only_the_cells_measured_faster(monkeypatch):
    """bfloat16 lstm_sequence on CPU: the cpu backend where the bf16 grid
    measured it faster at 1 and 2 threads, torch's own elsewhere (before, torch's
    own everywhere in bf16)."""
    import wmkernels.backends as backends

    monkeypatch.setattr(backends, "cpu_machine", lambda: "avx512_bf16")
    first = lambda sizes, inference: auto_candidates(  # noqa: E731
        "lstm_sequence", CPU, torch.bfloat16, sizes, inference=inference)[0][0]
    assert first(dict(T=128, B=1, I=256, H=256), inference=False) == "cpu"
    assert first(dict(T=128, B=64, I=512, H=512), inference=True) == "cpu"
    assert first(dict(T=128, B=16, I=256, H=256), inference=False) == "aten"  # 1.33x / 1.50x slower
    assert first(dict(T=128, B=1, I=256, H=256), inference=True) == "aten"  # parity at 1 thread
    monkeypatch.setattr(backends, "cpu_machine", lambda: "avx512")  # no bf16 kernels there
    assert first(dict(T=128, B=1, I=256, H=256), inference=False) == "aten"


def test_fp32_cpu_rules_take_only_the_cells_measured_faster(monkeypatch):
    """float32 lstm_sequence on an AVX-512 CPU: the cpu backend in the cells the
    grid measured faster at 1 and 2 threads, torch's own in the others."""
    import wmkernels.backends as backends

    monkeypatch.setattr(backends, "cpu_machine", lambda: "avx512")
    first = lambda B, H, inference: auto_candidates(  # noqa: E731
        "lstm_sequence", CPU, torch.float32, dict(T=128, B=B, I=H, H=H), inference=inference)[0][0]
    assert first(16, 128, inference=False) == first(64, 256, inference=False) == "cpu"
    assert first(16, 256, inference=False) == "aten"  # 1.01 at 1 thread
    assert first(4, 512, inference=True) == first(64, 256, inference=True) == "cpu"
    assert first(4, 256, inference=True) == first(16, 512, inference=True) == "aten"
    assert first(16, 128, inference=True) == "aten"  # a training cell only


def test_no_measurement_claims_a_kernel_faster_without_evidence():
    """Every rule names the result files it was taken from, and they are committed."""
    root = Path(__file__).parents[2]
    for rule in MEASURED_FASTER:
        head, _, rest = rule.evidence.partition("{")
        names = [head + part + rest.partition("}")[2] for part in rest.partition("}")[0].split(",")] if rest \
            else [rule.evidence]
        for name in names:
            assert name.startswith("benchmarks/results/") and (root / name).is_file(), name


# --------------------------------------------------------------------------- explain and the log

def test_explain_says_which_and_why(no_env):
    choice = explain("lstm_sequence", device="cpu", dtype=torch.float32, T=3, B=2, I=4, H=5)
    assert choice.backend == select_backend("lstm_sequence", None, CPU, torch.float32).name
    text = str(choice)
    assert f"-> {choice.backend}" in text and "auto" in text and choice.reason in text
    named = explain("wm_read", device="cpu", backend="aten")
    assert named.backend is None and "implements lstm_cell and lstm_sequence only" in str(named)
    assert explain("lstm_cell", backend="reference").reason == "asked for by name"
    with wmkernels.use_backend("reference"):
        assert explain("lstm_cell").backend == "reference"
    with pytest.raises(ValueError, match="op must be one of"):
        explain("lstm")


def test_explain_lists_what_auto_skipped(no_env, monkeypatch):
    from wmkernels.backends import cpu as cpu_module

    monkeypatch.setattr(cpu_module, "LOAD_ERROR", "not built (simulated)")
    choice = explain("lstm_cell", device="cpu", B=2, H=5)  # cpu first, then aten, on CPU
    assert choice.backend == "aten" and ("cpu", "not built (simulated)") in choice.rejected
    assert "not cpu: not built (simulated)" in str(choice)


def test_each_choice_is_logged(no_env, caplog):
    x, h0, c0 = torch.randn(3, 2, 4), torch.randn(2, 5), torch.randn(2, 5)
    with caplog.at_level(logging.DEBUG, logger="wmkernels.backends"):
        ops.lstm_sequence(x, h0, c0, torch.randn(20, 4), torch.randn(20, 5), backend="aten")
    assert any("lstm_sequence" in r.getMessage() and "-> aten" in r.getMessage() for r in caplog.records)


def test_info_shows_the_auto_choices(capsys):
    from wmkernels.__main__ import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "auto picks" in out and "lstm_sequence" in out and "aten" in out


# --------------------------------------------------------------------------- the aten backend

@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_aten_matches_reference(with_lengths, with_bias):
    case = testing.random_case("lstm_sequence", T=6, B=4, I=5, H=3, with_lengths=with_lengths,
                               with_bias=with_bias)
    for dtype in (torch.float64, torch.float32):
        bad = [r for r in testing.compare(case, "aten", dtype) if not r.passed]
        assert not bad, bad


def test_aten_one_bias_only():
    case = testing.random_case("lstm_sequence", T=4, B=2, I=3, H=2)
    x, h0, c0, w_ih, w_hh, b_ih, _ = (t.requires_grad_() for t in case.tensors.values())
    want = ops.lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, None, backend="reference")
    got = ops.lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, None, backend="aten")
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    g_got = torch.autograd.grad(sum(o.sum() for o in got), b_ih)
    g_want = torch.autograd.grad(sum(o.sum() for o in want), b_ih)
    torch.testing.assert_close(g_got, g_want)


def test_aten_gradcheck_with_zero_lengths():
    case = testing.random_case("lstm_sequence", T=4, B=3, I=2, H=2, with_lengths=True)
    assert int(case.extras["lengths"][1]) == 0
    inputs = [t.clone().requires_grad_() for t in case.tensors.values()]
    assert torch.autograd.gradcheck(lambda *t: ops.lstm_sequence(*t, lengths=case.extras["lengths"],
                                                                 backend="aten"), inputs)


@pytest.mark.parametrize("T, B", [(0, 3), (4, 0)])
def test_aten_empty(T, B):
    x, h0, c0 = torch.randn(T, B, 3), torch.randn(B, 2), torch.randn(B, 2)
    y, h, c = ops.lstm_sequence(x, h0, c0, torch.randn(8, 3), torch.randn(8, 2), backend="aten")
    assert y.shape == (T, B, 2) and torch.equal(h, h0) and torch.equal(c, c0)


def test_aten_refuses_memory_ops_by_name(no_env):
    M, q = torch.randn(2, 3, 4), torch.randn(2, 4)
    with pytest.raises(BackendUnavailableError, match="aten.*lstm_sequence only"):
        ops.wm_read(M, q, backend="aten")


# --------------------------------------------------------------------------- lengths

def test_cpu_lengths_stay_on_the_cpu_for_aten(monkeypatch):
    seen = {}
    original = BACKENDS["aten"].run_traceable

    def spy(op, inputs, extras):
        seen["device"] = extras["lengths"].device
        return original(op, inputs, extras)

    monkeypatch.setattr(BACKENDS["aten"], "run_traceable", spy)
    case = testing.random_case("lstm_sequence", T=4, B=3, I=2, H=2, with_lengths=True)
    case.run([t.float() for t in case.tensors.values()], "aten")
    assert seen["device"] == CPU


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8])
def test_lengths_of_any_integer_dtype(dtype):
    case = testing.random_case("lstm_sequence", T=4, B=3, I=2, H=2, with_lengths=True)
    as_int64 = case.run(list(case.tensors.values()), "reference")
    case.extras["lengths"] = case.extras["lengths"].to(dtype)
    for a, b in zip(case.run(list(case.tensors.values()), "reference"), as_int64):
        assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_device_to_host_sync_with_cpu_lengths():
    """A CUDA call with lengths on the CPU (as PackedSequence gives) never waits for the GPU."""
    case = testing.random_case("lstm_sequence", T=4, B=3, I=2, H=2, with_lengths=True)
    tensors = [t.float().cuda() for t in case.tensors.values()]
    lengths = case.extras["lengths"]
    on_device = lengths.cuda()
    ops.lstm_sequence(*tensors, lengths=lengths, backend="triton")  # compile the kernels first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ops.lstm_sequence(*tensors, lengths=lengths, backend="triton")
        ops.lstm_sequence(*tensors, lengths=on_device, backend="triton")  # checked on the device
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_lengths_are_checked_on_the_device():
    from wmkernels import _checks

    lengths = torch.tensor([0, 3, 5], device="cuda", dtype=torch.int32)
    got = _checks.lengths("op", lengths, 3, 5)
    assert got.device.type == "cuda" and got.dtype == torch.int64 and got.tolist() == [0, 3, 5]


# --------------------------------------------------------------------------- triton launches

def test_every_triton_launch_goes_through_launch():
    """The device guard and the AOT recorder live in triton/launch.py: no kernel is launched around them."""
    root = Path(wmkernels.__file__).parent / "triton"
    direct = re.compile(r"\b_?\w*kernel\s*\[[^\]]*\]\s*\(")
    offenders = [f"{p.name}:{n}" for p in root.glob("*.py") if p.name != "launch.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if direct.search(line)]
    assert not offenders, offenders


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_triton_on_the_second_gpu_while_the_first_is_current():
    case = testing.random_case("wm_lstm_sequence", T=3, B=2, I=3, H=4, S=2, D=3, with_lengths=True)
    with torch.cuda.device(0):
        rows = testing.compare(case, "triton", torch.float32, "cuda:1")
    assert all(r.passed for r in rows), rows


def test_aten_traces_under_torch_compile():
    """On CUDA auto sends nn.LSTM to aten: it must compile with fullgraph as the
    kernels do (allow_rnn: dynamo traces no torch.nn.LSTM without it)."""
    torch._dynamo.reset()
    lstm = wmkernels.nn.LSTM(4, 5, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 4, requires_grad=True)
    with wmkernels.use_backend("aten"), torch._dynamo.config.patch(allow_rnn=True):
        compiled = torch.compile(lstm, fullgraph=True, backend="aot_eager")
        got, (h, c) = compiled(x)
        want, (h2, c2) = lstm(x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close((h, c), (h2, c2))
    torch._dynamo.reset()


def test_cpu_inference_goes_to_torch_lstm(no_env):
    """No gradient wanted on CPU: torch's oneDNN LSTM, unless the cpu backend was
    measured faster for inference at the call's shape (not at these small sizes);
    training goes where auto's training rules say."""
    x, h0, c0 = torch.randn(4, 3, 5), torch.randn(3, 6), torch.randn(3, 6)
    w_ih, w_hh = torch.randn(24, 5), torch.randn(24, 6)
    assert auto_candidates("lstm_sequence", CPU, torch.float32, inference=True)[0][0] == "aten"
    seen = []
    original = ops._select

    def spy(*args, **kwargs):
        chosen = original(*args, **kwargs)
        seen.append(chosen.name)
        return chosen

    with torch.no_grad():
        from unittest import mock
        with mock.patch.object(ops, "_select", side_effect=spy):
            ops.lstm_sequence(x, h0, c0, w_ih, w_hh)
            ops.lstm_sequence(x, h0, c0, w_ih, w_hh.requires_grad_())  # no_grad: still inference
    with mock.patch.object(ops, "_select", side_effect=spy):
        ops.lstm_sequence(x, h0, c0, w_ih, w_hh)  # w_hh wants a gradient
    expected_training = select_backend("lstm_sequence", None, CPU, torch.float32).name
    assert seen == ["aten", "aten", expected_training]
    assert str(explain("lstm_sequence", inference=True, T=4, B=3, I=5, H=6)).count("inference") == 1


def test_nn_lstm_inference_on_cpu_is_torch_lstm_exactly(no_env):
    theirs = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True)
    ours = wmkernels.nn.LSTM(5, 6, num_layers=2, bidirectional=True)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(7, 3, 5)
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1][0], want[1][0])
    with torch.inference_mode():
        assert torch.equal(ours(x)[0], theirs(x)[0])


def test_traced_calls_with_lengths_skip_torch_lstm():
    """torch.compile cannot trace torch's packing (nor can it for torch.nn.LSTM): a traced
    call with lengths goes to the next backend that traces them."""
    for device, inference in ((CUDA, False), (CPU, True)):
        names = [n for n, _ in auto_candidates("lstm_sequence", device, torch.float32, BENCH, inference,
                                               traced_lengths=True)]
        assert "aten" not in names and names[-1] == "reference"
    assert not BACKENDS["aten"].traces_lengths and BACKENDS["cpu"].traces_lengths


@pytest.mark.skipif(torch.cuda.is_available(), reason="what explain says on a machine without a GPU")
def test_explain_on_cuda_without_a_gpu_says_so_and_what_a_gpu_would_take():
    choice = explain("lstm_sequence", device="cuda", dtype=torch.float16, T=64, B=16, I=32, H=32)
    assert choice.backend is None
    assert choice.reason.startswith("no CUDA device is visible on this machine")
    assert "a machine with one would take aten" in choice.reason
    wm = explain("wm_lstm_sequence", device="cuda", dtype=torch.float16, T=4, B=2, I=3, H=5, S=2, D=3)
    assert wm.backend is None and "no CUDA device is visible" in wm.reason
    there = "triton" if BACKENDS["triton"].build_reason("wm_lstm_sequence", torch.float16) is None else "reference"
    assert f"a machine with one would take {there}" in wm.reason


def test_explain_on_the_command_line(capsys):
    from wmkernels.__main__ import main

    assert main(["explain", "lstm_sequence", "--device", "cpu", "--T", "3", "--B", "2", "--I", "4", "--H", "5"]) == 0
    out = capsys.readouterr().out
    assert out == str(explain("lstm_sequence", device="cpu", T=3, B=2, I=4, H=5)) + "\n"
    assert main(["explain", "lstm_sequence", "--device", "cpu", "--inference"]) == 0
    assert "-> aten" in capsys.readouterr().out
    assert main(["explain", "lstm_sequence", "--device", "cpu", "--proj_size", "2"]) == 0
    assert "-> aten: proj_size > 0" in capsys.readouterr().out
    assert main(["explain", "lstm_sequence", "--device", "cpu", "--backend", "cpu", "--proj_size", "2"]) == 1
    assert "no LSTM projection" in capsys.readouterr().out

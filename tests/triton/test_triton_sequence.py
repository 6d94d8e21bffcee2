"""The triton backend's lstm_sequence against the float64 reference."""
import contextlib

import pytest
import torch

from tests.triton.triton_support import DEVICE, assert_matches, gpu_only, needs_triton, quiet_interpreter
from wmkernels import testing

pytestmark = [needs_triton, quiet_interpreter]


@pytest.mark.parametrize("sizes, with_lengths, with_bias", [
    (dict(T=5, B=3, I=7, H=9), False, True),
    (dict(T=6, B=4, I=5, H=11), True, False),
    (dict(T=1, B=1, I=1, H=1), False, True),
])
def test_lstm_sequence_float32(sizes, with_lengths, with_bias):
    assert_matches(testing.random_case("lstm_sequence", **sizes, with_lengths=with_lengths, with_bias=with_bias))


def test_lstm_sequence_float16():
    assert_matches(testing.random_case("lstm_sequence", T=4, B=3, I=5, H=9, with_lengths=True), torch.float16)


@gpu_only
def test_lstm_sequence_bfloat16():
    assert_matches(testing.random_case("lstm_sequence", T=17, B=19, I=70, H=130, with_lengths=True),
                   torch.bfloat16)


def test_lstm_sequence_float32_tiled(monkeypatch):
    """Several batch tiles and hidden/reduction chunks per program, as on a GPU at large sizes."""
    from wmkernels.lstm import lstm_sequence_triton as sequence
    monkeypatch.setattr(sequence, "launch_config", lambda B, H, like: dict(
        BLOCK_B=16, BLOCK_N=16, BLOCK_K=16, PRECISION="ieee", num_warps=4))
    assert_matches(testing.random_case("lstm_sequence", T=3, B=18, I=3, H=19, with_lengths=True))


@pytest.mark.parametrize("T, B", [(0, 2), (3, 0)])
def test_lstm_sequence_empty(T, B):
    assert_matches(testing.random_case("lstm_sequence", T=T, B=B, I=3, H=5))


@pytest.mark.parametrize("order", ["", ":reversed"])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_lstm_sequence_split_across_programs(monkeypatch, order, with_lengths):
    """The split step body (what the persistent schedule runs), one launch per step: three
    hidden-unit programs share each step, run in both orders, so a program that read
    another's output of the same step would give a wrong result in one of them."""
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "steps" + order)
    assert_matches(testing.random_case("lstm_sequence", T=4, B=5, I=3, H=37, with_lengths=with_lengths))


@pytest.mark.parametrize("weights", ["resident", "streamed"])
def test_lstm_sequence_split_batch_tiles(monkeypatch, weights):
    """Several batch tiles and hidden-unit programs per step (each batch tile has its own
    barrier counter), with w_hh resident in each program or streamed in chunks."""
    from wmkernels.triton import schedule
    if weights == "streamed":
        monkeypatch.setattr(schedule, "RESIDENT_ELEMENTS", 0)
    real = schedule.lstm_split_config
    monkeypatch.setattr(schedule, "lstm_split_config", lambda B, H, like, programs, backward=False: dict(
        real(B, H, like, programs, backward), BLOCK_B=16, BLOCK_N=16, **({"BLOCK_K": 16} if weights == "streamed" else {})))
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "steps:reversed")
    with schedule_recorded(monkeypatch) as plans:
        assert_matches(testing.random_case("lstm_sequence", T=3, B=18, I=3, H=19, with_lengths=True))
    assert {(p.grid, p.config["BLOCK_H"] > 0) for p in plans} == {((2, 2), weights == "resident")}


@contextlib.contextmanager
def schedule_recorded(monkeypatch):
    """Collect every plan the kernels launch with."""
    from wmkernels.triton import schedule
    plans, real = [], schedule.plan
    monkeypatch.setattr(schedule, "plan", lambda *a: plans.append(real(*a)) or plans[-1])
    yield plans


def test_persistent_schedule_falls_back_where_it_cannot_run(monkeypatch):
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "persistent")
    case = testing.random_case("lstm_sequence", T=2, B=3, I=3, H=20)
    if DEVICE == "cpu":
        with pytest.warns(RuntimeWarning, match="interpreter.*'steps'"):
            assert_matches(case)
    else:
        assert_matches(case)


@gpu_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sizes", [dict(T=33, B=16, I=64, H=768), dict(T=33, B=40, I=64, H=256),
                                   dict(T=9, B=3, I=5, H=37)])
@pytest.mark.parametrize("order", ["", ":reversed"])
def test_lstm_sequence_persistent_on_gpu(monkeypatch, dtype, sizes, order):
    """The persistent schedule for real: one cooperative launch, a grid barrier per step,
    w_hh streamed (H = 768) or resident (H = 256, 16-bit), several batch tiles (B = 40)."""
    monkeypatch.setenv("WMKERNELS_TRITON_SCHEDULE", "persistent" + order)
    with schedule_recorded(monkeypatch) as plans:
        assert_matches(testing.random_case("lstm_sequence", **sizes, with_lengths=True), dtype)
    assert plans and all(p.kind == "persistent" for p in plans)

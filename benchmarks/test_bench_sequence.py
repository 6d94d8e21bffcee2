"""pytest-benchmark suite of the sequence ops against their baselines.

    python -m pytest benchmarks --benchmark-group-by=param:op

Same workloads as ``python -m wmkernels bench`` (``wmkernels.tools.bench``): float32,
T=256, B=16, I=H=256, S=32, D=64 on the local device, forward+backward. The
saved-for-backward bytes of each workload, and for lstm_sequence the
matrix-product FLOPs of one forward+backward (GFLOP/s = flops / time), are
stored in ``extra_info``.
"""
import pytest
import torch

from wmkernels import testing
from wmkernels.tools import bench

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _workloads():
    loads = bench.lstm_workloads(DEVICE, torch.float32, **bench.DEFAULT_SIZES)
    for mode in ("fifo", "gated"):
        loads += bench.wm_lstm_workloads(DEVICE, torch.float32, write_mode=mode, **bench.DEFAULT_SIZES)
    return {f"{w.op}-{w.impl}": w for w in loads}


WORKLOADS = _workloads()


@pytest.mark.parametrize("key", list(WORKLOADS))
def test_forward_backward(benchmark, key):
    load = WORKLOADS[key]
    benchmark.group = load.op
    benchmark.extra_info.update(impl=load.impl, baseline=load.baseline, device=DEVICE,
                                saved_bytes=testing.saved_bytes(load.forward, load.inputs),
                                flops=load.flops, **bench.DEFAULT_SIZES)
    sync = torch.cuda.synchronize if DEVICE == "cuda" else (lambda: None)
    benchmark.pedantic(lambda: (load.run(), sync()), rounds=3, warmup_rounds=1)

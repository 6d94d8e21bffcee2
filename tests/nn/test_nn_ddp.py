"""DistributedDataParallel over the drop-in layers: two processes on this
machine (gloo, loopback only) each train on half the batch; their gradients at
every step equal those of one process training on the whole batch.

The model stacks wmkernels.nn.LSTM (2 layers, bidirectional) and a FIFO
WMLSTM under a linear head, in float64 so the comparison is tight. (FIFO, not
gated: from a zero memory the gated write keeps every slot equal, so the read
is uniform and w_q's gradient is rounding noise, not a comparable number.) The loss is
a mean, so DDP's average of the two half-batch gradients is the whole-batch
gradient. Workers are bounded by a deadline and killed past it.
"""
from __future__ import annotations

import datetime
import faulthandler
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import wmkernels
from wmkernels.testing import rel_err

WORLD, B, T, I, STEPS, LR = 2, 4, 5, 3, 3, 0.5
DEADLINE_S = 120


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = wmkernels.nn.LSTM(I, 4, num_layers=2, bidirectional=True, batch_first=True)
        self.memory = wmkernels.nn.WMLSTM(8, 5, memory_slots=3, memory_dim=2, write_mode="fifo",
                                          batch_first=True)
        self.head = torch.nn.Linear(7, 2)

    def forward(self, x):
        y, _ = self.lstm(x)
        z, _ = self.memory(y)
        return self.head(z[:, -1])


def train(model, x, target, step_hook):
    """STEPS of SGD on the mean squared error; ``step_hook(step)`` after each backward."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    for step in range(STEPS):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        step_hook(step)
        optimizer.step()


def _worker(rank, port, init_state, x, target, out_dir):
    # A worker still running shortly before the deadline prints where it is
    # (seen once: both workers past 120 s, cause unknown), then is killed.
    faulthandler.dump_traceback_later(DEADLINE_S - 15, exit=False)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        model = Model().double()
        model.load_state_dict(init_state)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        shard = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        grads = []
        train(ddp, x[shard], target[shard],
              lambda step: grads.append({n: p.grad.clone() for n, p in model.named_parameters()}))
        torch.save({"grads": grads, "params": model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process(tmp_path):
    model = Model().double()
    init_state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(B, T, I, dtype=torch.float64)
    target = torch.randn(B, 2, dtype=torch.float64)

    expected = []
    train(model, x, target,
          lambda step: expected.append({n: p.grad.clone() for n, p in model.named_parameters()}))

    context = mp.start_processes(_worker, args=(free_port(), init_state, x, target, str(tmp_path)),
                                 nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP workers did not finish within {DEADLINE_S} s")

    for rank in range(WORLD):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert len(result["grads"]) == STEPS
        for step, (got, want) in enumerate(zip(result["grads"], expected)):
            assert set(got) == set(want)
            for name in want:
                assert rel_err(got[name], want[name]) <= 1e-10, f"rank {rank} step {step} grad of {name}"
        for name, value in model.state_dict().items():
            assert rel_err(result["params"][name], value) <= 1e-10, f"rank {rank} final {name}"
    # The gradients are not trivially equal: the two halves of the batch differ.
    half = Model().double()
    half.load_state_dict(init_state)
    torch.nn.functional.mse_loss(half(x[:B // 2]), target[:B // 2]).backward()
    assert rel_err(half.lstm.weight_ih_l0.grad, expected[0]["lstm.weight_ih_l0"]) > 1e-3

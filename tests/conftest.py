"""Test set-up shared by every test module.

TRITON_INTERPRET must be set before any Triton kernel module is imported
(``@triton.jit`` reads it), so it is set here, once per process, when no GPU
is present. Every test draws fresh random inputs: the seed is new each run
and printed, so a failure can be replayed with WMKERNELS_TEST_SEED.
"""
import os
import secrets

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = int(os.environ.get("WMKERNELS_TEST_SEED", secrets.randbits(31)))
    torch.manual_seed(seed)
    print(f"seed={seed} (replay with WMKERNELS_TEST_SEED={seed})")
    yield seed

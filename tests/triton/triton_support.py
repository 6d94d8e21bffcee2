"""Shared by the tests of the triton backend (tests/triton/test_triton_*.py).

On CPU they run under TRITON_INTERPRET=1 (set by conftest when no GPU is
present); every program instance costs milliseconds there, so sizes are
small but awkward (not powers of two, B = 1, T = 1).
"""
import pytest
import torch

from wmkernels import testing
from wmkernels.backends import BACKENDS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
REASON = BACKENDS["triton"].device_reason(torch.device(DEVICE))
needs_triton = pytest.mark.skipif(REASON is not None, reason=f"triton backend unavailable: {REASON}")
# triton 3.6's interpreter converts 1-element arrays to ints (numpy < 2.4 only warns)
quiet_interpreter = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
gpu_only = pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="GPU-only: the Triton interpreter has no bfloat16 arithmetic")


def assert_matches(case: testing.Case, dtype: torch.dtype = torch.float32) -> None:
    """Every output and input gradient of ``case`` on triton within contract §4."""
    rows = testing.compare(case, "triton", dtype, DEVICE)
    bad = [f"{r.name}: {r.error:.2e} > {r.tolerance:.0e}" for r in rows if not r.passed]
    assert not bad, f"{case.describe()}: " + "; ".join(bad)

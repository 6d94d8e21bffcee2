"""wmkernels: fused kernels for LSTM gates, working-memory slot operations and
the working-memory LSTM, behind PyTorch autograd, with a pure-PyTorch reference.

    import wmkernels
    y, h_n, c_n = wmkernels.ops.lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    with wmkernels.use_backend("reference"):
        ...
    lstm = wmkernels.nn.LSTM(32, 64, num_layers=2)   # drop-in for torch.nn.LSTM
    model = wmkernels.patch(model)                   # or swap a model's LSTMs in place
"""
import warnings

from wmkernels import nn, ops, reference
from wmkernels.backends import BackendUnavailableError, availability, environment_problems, explain, use_backend
from wmkernels.nn import patch
from wmkernels.ops import (lstm_cell, lstm_sequence, wm_lstm_sequence, wm_read,
                           wm_shift_write, wm_write)

__version__ = "0.1.0"


def _warn_about_the_environment() -> None:
    for problem in environment_problems():
        warnings.warn(f"wmkernels: {problem}", stacklevel=3)


_warn_about_the_environment()

__all__ = [
    "BackendUnavailableError", "availability", "explain", "lstm_cell", "lstm_sequence", "nn", "ops", "patch",
    "reference", "use_backend", "wm_lstm_sequence", "wm_read", "wm_shift_write", "wm_write",
    "__version__",
]

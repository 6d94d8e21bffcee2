"""wmkernels: fused kernels for LSTM gates, working-memory slot operations and
the working-memory LSTM, behind PyTorch autograd, with a pure-PyTorch reference.

    import wmkernels
    y, h_n, c_n = wmkernels.ops.lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    with wmkernels.use_backend("reference"):
        ...
"""
from wmkernels import ops, reference
from wmkernels.backends import BackendUnavailableError, availability, use_backend
from wmkernels.ops import (lstm_cell, lstm_sequence, wm_lstm_sequence, wm_read,
                           wm_shift_write, wm_write)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "availability", "lstm_cell", "lstm_sequence", "ops",
    "reference", "use_backend", "wm_lstm_sequence", "wm_read", "wm_shift_write", "wm_write",
    "__version__",
]

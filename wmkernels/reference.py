"""The pure-PyTorch reference of every op of contract §1, gathered in one place.

Each op family keeps its reference beside its kernels (``wmkernels.lstm.reference``,
``wmkernels.memory.reference``, ``wmkernels.wm_lstm.reference``); this module
only names them together, as ``wmkernels.reference``. Written for clarity,
never for speed, in any floating dtype (float64 included): the source of truth
every backend is tested against. It does not validate its arguments
(``wmkernels.ops`` does that once, before any backend).
"""
from wmkernels.contract import WM_GATED_ONLY_KEYS, WM_PARAM_KEYS, WRITE_MODES
from wmkernels.lstm.reference import lstm_cell, lstm_sequence, lstm_step
from wmkernels.memory.reference import wm_read, wm_shift_write, wm_write
from wmkernels.wm_lstm.reference import active_slots, wm_lstm_sequence, wm_lstm_step

__all__ = ["WM_GATED_ONLY_KEYS", "WM_PARAM_KEYS", "WRITE_MODES", "active_slots", "lstm_cell", "lstm_sequence",
           "lstm_step", "wm_lstm_sequence", "wm_lstm_step", "wm_read", "wm_shift_write", "wm_write"]

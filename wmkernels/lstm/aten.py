"""lstm_sequence on torch's own LSTM (contract §1.2): ``torch._VF.lstm``, the
call behind ``torch.nn.LSTM`` (cuDNN on CUDA, ATen's kernels on CPU), what the
aten backend runs.

Lengths go through a ``PackedSequence``, as in ``torch.nn.LSTM``:
packing needs the lengths on the CPU (lengths given on a GPU are copied
there, a device-to-host sync; pass them on the CPU, as ``PackedSequence``
keeps its batch sizes, to avoid it) and at least 1, so rows of length 0 are
left out of the call: they take no step (not even one on zeros, whose zero
gradient times an infinite weight would be NaN), keep the state they start
with and output zeros.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def _weights_not_flattened_is_expected():
    """cuDNN warns when the weights are not one flat buffer (torch.nn.LSTM's
    flatten_parameters); here they are the caller's own tensors, copied into
    one buffer per call (a few MB at H=768, microseconds), so the warning says
    nothing the user can act on. (torch.compile cannot trace the filter: there
    the warning may show.)"""
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    return _ignoring_flatten_warning()


@contextlib.contextmanager
def _ignoring_flatten_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
        yield


def lstm_sequence(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None):
    """contract §1.2 through ``torch._VF.lstm``: x [T, B, I], h0/c0 [B, H] -> (y [T, B, H], h_n, c_n)."""
    T, B, _ = x.shape
    H = h0.shape[1]
    if T == 0 or B == 0:  # cuDNN and packing refuse empty sequences; nothing runs
        return x.new_zeros(T, B, H), h0.clone(), c0.clone()
    params = [w_ih, w_hh]
    if b_ih is not None or b_hh is not None:  # _VF.lstm takes both biases or none
        params += [b if b is not None else torch.zeros_like(w_ih[:, 0]) for b in (b_ih, b_hh)]
    has_biases = len(params) == 4
    state = (h0.unsqueeze(0), c0.unsqueeze(0))
    # train=False (inference, nothing kept) unless something wants a gradient
    train = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, h0, c0, *params))
    if lengths is None:
        with _weights_not_flattened_is_expected():
            y, h_n, c_n = torch._VF.lstm(x, state, params, has_biases, 1, 0.0, train, False, False)
        return y, h_n[0], c_n[0]
    host_lengths = lengths.cpu()
    empty = host_lengths == 0
    if bool(empty.any()):  # the rows that run, alone; the others pass around the call
        run = (~empty).nonzero().squeeze(1)
        if run.numel() == 0:
            return x.new_zeros(T, B, H), h0.clone(), c0.clone()
        on = run.to(x.device)
        y, h_n, c_n = lstm_sequence(x.index_select(1, on), h0.index_select(0, on), c0.index_select(0, on),
                                    w_ih, w_hh, b_ih, b_hh, host_lengths[run])
        return x.new_zeros(T, B, H).index_copy(1, on, y), h0.index_copy(0, on, h_n), c0.index_copy(0, on, c_n)
    packed = pack_padded_sequence(x, host_lengths, enforce_sorted=False)
    order, unorder = packed.sorted_indices, packed.unsorted_indices
    state = (state[0].index_select(1, order), state[1].index_select(1, order))
    with _weights_not_flattened_is_expected():
        data, h_n, c_n = torch._VF.lstm(packed.data, packed.batch_sizes, state, params, has_biases, 1, 0.0,
                                        train, False)
    y, _ = pad_packed_sequence(packed._replace(data=data), total_length=T)
    return y, h_n[0].index_select(0, unorder), c_n[0].index_select(0, unorder)

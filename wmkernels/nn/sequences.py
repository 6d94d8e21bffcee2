"""Sequence plumbing shared by the recurrent layers: ``PackedSequence`` in and
out, ``batch_first``, unbatched input, and running a direction backwards within
each row's length.

The layers run the ops on time-major padded tensors ``[T, B, F]`` in the
caller's batch order, with per-row ``lengths`` (contract §1.2) for packed input;
these helpers convert to and from that form.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from wmkernels.nn import checks


def unpack(packed: PackedSequence) -> Tuple[Tensor, Tensor]:
    """PackedSequence -> (padded [T, B, *] in the caller's batch order, lengths int64 [B] on CPU)."""
    return pad_packed_sequence(packed)


def repack(padded: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``padded`` [T, B, *] (caller's batch order) with the batch sizes and
    permutation of ``like``, so the result has exactly ``like``'s layout."""
    if like.sorted_indices is not None:
        padded = padded.index_select(1, like.sorted_indices)
        lengths = lengths[like.sorted_indices.cpu()]
    data = pack_padded_sequence(padded, lengths.cpu(), enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def reverse_within(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse each batch row of ``x`` [T, B, *] in time within its own length.

    Row ``b`` becomes ``x[L_b - 1], …, x[0]`` followed by its (untouched)
    padding ``x[L_b:]``; without ``lengths`` every row has length ``T``. The
    map is its own inverse, so the same call un-reverses the outputs.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)            # [T, 1]
    L = lengths.to(x.device, non_blocking=True).unsqueeze(0)      # [1, B]
    index = torch.where(t < L, L - 1 - t, t)                      # [T, B]
    index = index.view(index.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return x.gather(0, index)


def time_major(x: Tensor, batch_first: bool) -> Tensor:
    """[B, T, *] -> [T, B, *] when ``batch_first``; otherwise ``x`` itself."""
    return x.transpose(0, 1) if batch_first else x


def layer_input(layer: str, input, batch_first: bool) -> Tuple[Tensor, Optional[Tensor], bool]:
    """A layer's ``input`` as the ops take it: ``(x [T, B, F], lengths, batched)``.

    ``input``: a ``PackedSequence`` (``lengths`` int64 ``[B]`` on the CPU, where
    the ops check them with no sync), ``[T, B, F]`` (``[B, T, F]`` with
    ``batch_first``) or unbatched ``[T, F]`` (then ``B = 1`` and ``batched`` is
    False), as ``torch.nn.LSTM`` takes it; the rank is checked here.
    """
    if isinstance(input, PackedSequence):
        x, lengths = unpack(input)
        return x, lengths, True
    checks.tensor(layer, "input", input, (2, 3))
    if input.dim() == 2:
        return input.unsqueeze(1), None, False
    return time_major(input, batch_first), None, True


def layer_output(y: Tensor, lengths: Optional[Tensor], like, batched: bool, batch_first: bool):
    """The inverse of ``layer_input`` for an output ``y [T, B, F']``: packed like
    ``like`` if it was a ``PackedSequence``, ``[T, F']`` if unbatched, else
    ``[T, B, F']`` (``[B, T, F']`` with ``batch_first``)."""
    if isinstance(like, PackedSequence):
        return repack(y, lengths, like)
    if not batched:
        return y.squeeze(1)
    return time_major(y, batch_first)

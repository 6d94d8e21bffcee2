"""``WMKERNELS_TRITON_SCHEDULE``: which schedule the recurrent Triton kernels
run (``schedule.py`` says what each does). Free of Triton imports, so the
package checks the variable at import, with its other settings."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional

SCHEDULE_ENV = "WMKERNELS_TRITON_SCHEDULE"
KINDS = ("tile", "steps", "persistent")
SPLIT_BLOCK_N = (16, 32, 64, 128)  # hidden-unit blocks of the split grid, smallest first


@dataclass(frozen=True)
class Schedule:
    """``kind[:reversed][:n<BLOCK_N>][:streamed]``: ``block_n`` fixes the split
    grid's hidden-unit block (for measuring; by default the smallest that fits
    the GPU); ``streamed`` streams the weights where they would be resident
    (for measuring what residency buys)."""

    kind: str = "tile"
    reversed: bool = False
    block_n: Optional[int] = None
    streamed: bool = False


def requested() -> Schedule:
    """The schedule ``WMKERNELS_TRITON_SCHEDULE`` asks for (``ValueError`` when unreadable)."""
    text = os.environ.get(SCHEDULE_ENV, "tile").strip().lower() or "tile"
    kind, *options = text.split(":")
    block_ns = [int(o[1:]) for o in options if o[:1] == "n" and o[1:].isdigit() and int(o[1:]) in SPLIT_BLOCK_N]
    flags = ("reversed", "streamed")
    known = sum(options.count(flag) for flag in flags) + len(block_ns)
    if kind not in KINDS or known != len(options) or len(block_ns) > 1 or \
            any(options.count(flag) > 1 for flag in flags) or ((block_ns or "streamed" in options) and kind == "tile"):
        raise ValueError(f"{SCHEDULE_ENV}={text!r}: expected one of {', '.join(KINDS)}, optionally followed by "
                         f"':reversed' and (steps, persistent) ':n' and a hidden-unit block of "
                         f"{', '.join(map(str, SPLIT_BLOCK_N))} and ':streamed'")
    return Schedule(kind, "reversed" in options, block_ns[0] if block_ns else None, "streamed" in options)


@contextlib.contextmanager
def using(text: str) -> Iterator[Schedule]:
    """Run the block with ``WMKERNELS_TRITON_SCHEDULE=text`` (checked first)."""
    previous = os.environ.get(SCHEDULE_ENV)
    os.environ[SCHEDULE_ENV] = text
    try:
        yield requested()
    finally:
        if previous is None:
            del os.environ[SCHEDULE_ENV]
        else:
            os.environ[SCHEDULE_ENV] = previous

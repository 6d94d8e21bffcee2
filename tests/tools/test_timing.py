"""wmkernels.tools.timing's rotated rounds and per-round ratios."""
import pytest

from wmkernels.tools.timing import Ratio, rotated_rounds


def test_rotated_rounds_time_every_run_once_per_round_in_a_rotating_order():
    calls = []
    runs = [lambda k=k: calls.append(k) for k in range(3)]
    times = rotated_rounds(runs, rounds=3, warmup=1)
    assert [len(t) for t in times] == [3, 3, 3] and all(v >= 0 for t in times for v in t)
    assert calls == [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2]  # the warm-up round, then 3 timed ones


def test_ratio_is_the_median_of_per_round_ratios_with_its_spread():
    # per-round ratios 0.5, 2.0, 1.0, 4.0, 0.5: median 1.0 (the ratio of the medians is 3/2)
    ratio = Ratio.of([1.0, 4.0, 3.0, 8.0, 3.0], [2.0, 2.0, 3.0, 2.0, 6.0])
    assert ratio.median == 1.0 and ratio.min == 0.5 and ratio.max == 4.0
    assert ratio.iqr == pytest.approx(2.0 - 0.5)
    one = Ratio.of([2.0], [4.0])
    assert (one.median, one.min, one.max, one.iqr) == (0.5, 0.5, 0.5, 0.0)

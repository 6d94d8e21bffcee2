"""Test set-up shared by every test module.

TRITON_INTERPRET must be set before any Triton kernel module is imported
(``@triton.jit`` reads it), so it is set here, once per process, when no GPU
is present. Every test draws fresh random inputs: the seed is new each run
and printed, so a failure can be replayed with WMKERNELS_TEST_SEED.

What the tests compile (Triton kernels, the ahead-of-time check's ~500
variants; torch.compile's inductor C++) is cached in the project's
``.test-cache/`` (git-ignored), never in the user's ``~/.triton`` or
``/tmp/torchinductor_<user>``: a second run reuses it on purpose (the
ahead-of-time check then takes seconds); delete the folder for a cold run, or
point WMKERNELS_TEST_CACHE elsewhere. Subprocesses of the tests inherit it.
"""
import gc
import os
import secrets
from pathlib import Path

TEST_CACHE = Path(os.environ.get("WMKERNELS_TEST_CACHE", Path(__file__).resolve().parents[1] / ".test-cache"))
os.environ["TRITON_CACHE_DIR"] = str(TEST_CACHE / "triton")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(TEST_CACHE / "inductor")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# pytest-xdist: the cores shared among the workers, not each worker's torch on every core
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_seed():
    seed = int(os.environ.get("WMKERNELS_TEST_SEED", secrets.randbits(31)))
    torch.manual_seed(seed)
    print(f"seed={seed} (replay with WMKERNELS_TEST_SEED={seed})")
    yield seed


def pytest_configure(config):
    if getattr(config.option, "maxschedchunk", "absent") is None:  # xdist present, not set by the user
        config.option.maxschedchunk = 1  # see FIRST_BATCH
    config.addinivalue_line("markers", "slow(minutes): runs for about that many minutes on 2 cores with a cold "
                                       "cache; started first, longest first (pytest_collection_modifyitems)")


# pytest-xdist's load scheduler deals each worker its first tests as one batch
# of consecutive ones: with the default chunk (a quarter of a worker's share,
# ~330 tests here) every slow test landed on the first worker and ran one after
# the other (cold cache: the two ahead-of-time checks, then the GPU dry run,
# then the CMake build, 8 minutes in) while the second worker ran the rest.
# With --maxschedchunk=1 a worker starts with FIRST_BATCH tests and then takes
# one at a time, so the order below puts each worker's share of the slow tests
# in its first batch.
FIRST_BATCH = 2


def pytest_collection_finish(session):
    """What collection built (torch, Triton, the test modules: ~10^6 objects)
    lives to the end: moved out of the cyclic collector's reach, so the garbage
    the Triton interpreter makes is collected without rescanning it (3% of an
    interpreted test's time)."""
    gc.collect()
    gc.freeze()


# The tests that run Triton kernels under the interpreter take seconds each, most
# others milliseconds: they go first (after the slow ones), so the run ends on
# short tests the workers share out evenly instead of one worker finishing a
# 15-second test alone.
INTERPRETED = ("tests/triton/", "tests/ops/test_hostile_values.py")


def interpreted(item) -> bool:
    return getattr(item, "nodeid", "").startswith(INTERPRETED)


def slow_minutes(item) -> float:
    mark = item.get_closest_marker("slow")
    return 0 if mark is None else mark.kwargs.get("minutes", 1)


def pytest_collection_modifyitems(config, items):
    """The slow tests first, longest first, dealt to the xdist workers (each
    next to the least loaded so far) so that each starts its share at once and
    the short tests fill in around them, instead of one long test running alone
    at the end; of the short ones, the interpreted first. Runs in every worker
    (each collects), deterministically."""
    slow = sorted((i for i in items if slow_minutes(i)), key=slow_minutes, reverse=True)  # stable
    fast = sorted((i for i in items if not slow_minutes(i)), key=lambda i: not interpreted(i))  # stable
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    lanes, load = [[] for _ in range(workers)], [0.0] * workers
    for item in slow:
        w = load.index(min(load))
        lanes[w].append(item)
        load[w] += slow_minutes(item)
    first, later = [], []
    for lane in lanes:
        batch = lane[:FIRST_BATCH]
        later += lane[FIRST_BATCH:]
        while len(batch) < FIRST_BATCH and fast and workers > 1:
            batch.append(fast.pop(0))
        first += batch
    items[:] = first + sorted(later, key=slow_minutes, reverse=True) + fast

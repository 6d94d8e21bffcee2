"""The test suite leaves the user's environment alone: what it compiles is
cached in the project's git-ignored ``.test-cache/`` (conftest), and the slow
tests are started first so pytest-xdist runs them side by side."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_compile_caches_are_the_projects_and_ignored_by_git():
    from tests.conftest import TEST_CACHE

    for variable, sub in (("TRITON_CACHE_DIR", "triton"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
        assert Path(os.environ[variable]) == TEST_CACHE / sub
    if "WMKERNELS_TEST_CACHE" not in os.environ:
        assert TEST_CACHE == ROOT / ".test-cache"
        assert ".test-cache/" in (ROOT / ".gitignore").read_text().splitlines(), ".test-cache/ is not git-ignored"


def test_triton_writes_its_cache_there():
    triton = pytest.importorskip("triton")
    from tests.conftest import TEST_CACHE

    assert Path(triton.knobs.cache.dir) == TEST_CACHE / "triton"


class _Item:
    def __init__(self, name, minutes=None, nodeid=""):
        self.name, self.minutes, self.nodeid = name, minutes, nodeid

    def get_closest_marker(self, name):
        return None if self.minutes is None else pytest.mark.slow(minutes=self.minutes).mark


def _ordered(workers, monkeypatch):
    from tests.conftest import pytest_collection_modifyitems

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    items = [_Item("a"), _Item("cmake", 2), _Item("b"), _Item("aot80", 15), _Item("aot90", 15), _Item("c"),
             _Item("gpu", 3)]
    pytest_collection_modifyitems(None, items)
    return [i.name for i in items]


def test_slow_tests_are_started_first(monkeypatch):
    assert _ordered(1, monkeypatch) == ["aot80", "aot90", "gpu", "cmake", "a", "b", "c"]


def test_each_worker_starts_its_share_of_the_slow_tests(monkeypatch):
    """xdist deals each worker its first FIRST_BATCH tests at once (conftest sets
    --maxschedchunk=1): the two ahead-of-time checks must not share a batch."""
    from tests.conftest import FIRST_BATCH

    assert FIRST_BATCH == 2
    assert _ordered(2, monkeypatch) == ["aot80", "gpu", "aot90", "cmake", "a", "b", "c"]
    assert _ordered(4, monkeypatch) == ["aot80", "a", "aot90", "b", "gpu", "c", "cmake"]


def test_xdist_sends_one_test_at_a_time_after_the_first_batch(request):
    if request.config.pluginmanager.hasplugin("xdist"):
        assert request.config.getoption("maxschedchunk") == 1


def test_the_long_tests_are_marked_slow():
    from tests.cpp import test_build_cmake
    from tests.tools import test_aot, test_gpu_report

    assert any(m.name == "slow" for m in test_build_cmake.pytestmark)
    assert any(m.name == "slow" for m in test_aot.test_every_launched_variant_compiles.pytestmark)
    assert any(m.name == "slow" for m in test_gpu_report.test_gpu_check_dry_run_writes_json_and_markdown.pytestmark)


def test_interpreted_tests_come_before_the_other_short_ones(monkeypatch):
    from tests.conftest import pytest_collection_modifyitems

    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    items = [_Item("a", nodeid="tests/nn/test_a.py::a"), _Item("t1", nodeid="tests/triton/test_t.py::t1"),
             _Item("aot", 15), _Item("b", nodeid="tests/ops/test_ops.py::b"),
             _Item("h", nodeid="tests/ops/test_hostile_values.py::h"), _Item("t2", nodeid="tests/triton/test_t.py::t2")]
    pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["aot", "t1", "h", "t2", "a", "b"]

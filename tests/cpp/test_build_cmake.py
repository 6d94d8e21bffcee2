"""The plain CMake project builds and its C++ unit tests pass under ctest."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("ninja") is None,
    reason="cmake and ninja are needed to build the CMake project",
)


def _run(cmd, cwd=None, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
        f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def cmake_build(tmp_path_factory):
    """Configure and build the project once per module; returns the build dir."""
    build = tmp_path_factory.mktemp("cmake-build")
    _run(["cmake", "-S", str(ROOT), "-B", str(build), "-G", "Ninja",
          "-DCMAKE_BUILD_TYPE=Release", f"-DPYTHON_EXECUTABLE={sys.executable}"])
    _run(["cmake", "--build", str(build), "-j2"])
    return build


def test_cmake_build_and_ctest(cmake_build):
    assert (cmake_build / "wmkernels_cpp_tests").exists()
    _run(["ctest", "--test-dir", str(cmake_build), "--output-on-failure"])


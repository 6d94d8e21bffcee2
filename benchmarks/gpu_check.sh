#!/usr/bin/env bash
# The GPU protocol on a fresh H100/H200 machine (one command, ~8 minutes):
# builds wmkernels against the machine's own torch (no downloads: the lent
# machines reach no registry), then runs `python -m wmkernels gpu-report`:
# the whole test suite on CUDA and the benchmarks at T=1024, B=16, I=H=768,
# written as JSON + markdown with the device named.
#
#   bash benchmarks/gpu_check.sh --out "$OUT"        # on the device machine
#   bash benchmarks/gpu_check.sh --dry-run --out /tmp/r   # the same plumbing on CPU
#
# --no-install (first argument) uses the wmkernels already installed instead of
# rebuilding it (the test suite's dry run: tests never reinstall the package).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
start=$(date +%s)
if [ "${1:-}" = "--no-install" ]; then
    shift
    echo "[gpu_check] --no-install: using the installed wmkernels"
else
    MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PYTHON" -m pip install -q --no-build-isolation --no-deps --no-index -e . \
        2>&1 | grep -v "^WARNING: Location" || true
fi
"$PYTHON" -c "import wmkernels, sys; sys.exit(0 if wmkernels.availability(__import__('torch').device('cpu'))['cpu'] is None else 1)" \
    || { echo "gpu_check: wmkernels._C did not build" >&2; exit 1; }
echo "[gpu_check] installed in $(( $(date +%s) - start )) s"
budget=${GPU_CHECK_BUDGET_S:-480}
exec "$PYTHON" -m wmkernels gpu-report --budget-s $(( budget - ($(date +%s) - start) )) "$@"

"""Measurement and GPU-protocol tooling, apart from what ``import wmkernels``
loads; reached through ``python -m wmkernels {bench,gpu-report}`` and
``python -m wmkernels.tools.aot``.

    bench.py        interleaved forward+backward timings against the baselines
    bench_plot.py   scaling curves of bench around a size (``bench --plot``)
    floor.py        the floor model of the persistent GPU schedules
    probes.py       device probes of the floor model (grid barrier, L2 reads; Triton)
    gpu_report.py   the GPU protocol: tests and benchmarks on a lent GPU
    aot.py          the ahead-of-time compile check of every launched Triton variant
"""

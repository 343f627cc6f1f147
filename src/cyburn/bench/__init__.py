"""cyburn's benchmark, `python -m cyburn.bench` (its options: __main__.py).

cases    the rows of the report: for each function, input, mode and regime, the contenders,
         the memory pattern and the bytes they move (also what benchmarks/test_bench_*.py
         time under pytest-benchmark)
machine  the CPU, caches and memory as the OS reports them, and the ceilings of the memory
         patterns: cyburn's probes (pyx/probes.pxi)
ort      ONNX Runtime as a peer: one-node models built in code, run through io_binding
timing   contenders timed in interleaved rounds
report   the tables and progress on stderr
plot     the charts of --plot
compose  cyburn's kernels between NumPy matrix products (the compose suite)
gpt2     GPT-2 small: adamw_step, a training step, generation, peak memory (the gpt2 suite)
"""

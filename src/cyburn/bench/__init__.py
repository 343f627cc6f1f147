"""cyburn's benchmark, `python -m cyburn.bench` (its options: __main__.py).

cases    the rows of the report: for each function, input and mode, the contenders and the
         bytes they move (also what benchmarks/test_bench_*.py time under pytest-benchmark)
timing   contenders timed in interleaved rounds
report   the tables, the machine, progress on stderr
plot     the charts of --plot
compose  cyburn's kernels between NumPy matrix products (the compose suite)
gpt2     GPT-2 small: adamw_step, a training step, generation, peak memory (the gpt2 suite)
"""

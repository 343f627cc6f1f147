"""cyburn's benchmark: `python -m cyburn.bench` (see cyburn.bench.cases for its options)."""

"""ringps benchmarks: `python -m bench` (see README)."""

"""Speed and memory benchmarks (print figures; not timed tests). Run from the repo root: ``python -m bench.<name>``."""

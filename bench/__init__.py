"""livefwd beside fwupd: the benchmark harness (``make bench``, bench/run.py)."""

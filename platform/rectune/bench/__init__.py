"""Benchmarks behind ``rectune bench ...``: each prints figures measured side by side in one run."""

"""Benchmarks: `make bench` runs them all and prints figures. They never assert times."""

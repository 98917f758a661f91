"""Benchmark harnesses, run by `make bench`: apart from the product packages, free to import any of them."""

"""Stubs of the Open Inference Protocol (v2), generated from protos/ by `make proto`."""

"""fpgaflow: a neural network from data to a bit-exact FPGA emulation served over gRPC, beside CPU and GPU."""

__version__ = "0.1.0"

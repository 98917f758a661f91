"""Inference service: the model behind TensorFlow Serving's gRPC API, on cpu, gpu or fpga back ends."""

"""Converter service: hls4ml conversion of the trained model, its fidelity check, and the emulator artifact."""

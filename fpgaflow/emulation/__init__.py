"""The firmware's emulation, shared by the converter (which checks it) and the inference server (which serves
it): ap_fixed arithmetic (apfixed), the vectorized emulator (fastemu), hls4ml's compiled C simulation
(library) and the device timing model (timing)."""

"""Trainer service: data sets, the Keras model of the spec, and the `train` stage."""

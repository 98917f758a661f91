"""Jets simulated with the field's own tools: Pythia 8 for the collisions, FastJet (and its contrib) for the
clustering, the grooming and the substructure features."""

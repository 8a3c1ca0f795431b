"""linearlab.layers.heads."""

"""linearlab.layers.linear."""

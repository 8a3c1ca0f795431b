"""linearlab.bench."""

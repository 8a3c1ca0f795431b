"""linearlab.convert."""

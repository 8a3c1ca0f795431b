"""linearlab.train."""

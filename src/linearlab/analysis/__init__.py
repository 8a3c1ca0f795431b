"""linearlab.analysis."""

"""linearlab.models."""

"""linearlab.tasks."""

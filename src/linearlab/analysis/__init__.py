"""linearlab.analysis: read-only tools over models that return hidden states (probes, ...)."""

from linearlab.analysis.probes import LinearProbe, probe_r2, r2_score

__all__ = ["LinearProbe", "probe_r2", "r2_score"]

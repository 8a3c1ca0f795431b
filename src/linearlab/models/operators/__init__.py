"""Neural operators: MgNO (multigrid V-cycles as linear operators), an FNO baseline and a CNN baseline."""

from linearlab.models.operators.cnn import ConvNet
from linearlab.models.operators.fno import FNO1d, SpectralConv1d
from linearlab.models.operators.mgno import MgConv, MgIte, MgNO, Restrict

__all__ = ["FNO1d", "ConvNet", "MgConv", "MgIte", "MgNO", "Restrict", "SpectralConv1d"]

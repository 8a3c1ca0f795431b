"""Output heads that replace a linear layer over classes or bins."""

from linearlab.layers.heads.fourier import FourierHead
from linearlab.layers.heads.svm import SVMHead, squared_hinge_loss

__all__ = ["FourierHead", "SVMHead", "squared_hinge_loss"]

"""Output heads that replace a linear layer over classes or bins."""

from linearlab.layers.heads.fourier import FourierHead
from linearlab.layers.heads.svm import SVMHead, squared_hinge_loss
from linearlab.layers.heads.vq_logits import VQLogitsConfig, VQLogitsHead

__all__ = ["FourierHead", "SVMHead", "VQLogitsConfig", "VQLogitsHead", "squared_hinge_loss"]

"""Output heads that replace a linear layer over classes or bins."""

from linearlab.layers.heads.fourier import FourierHead

__all__ = ["FourierHead"]

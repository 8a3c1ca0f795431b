"""Neural vocoders: APNet (amplitude + phase spectra at frame rate), a HiFi-GAN-v1-style generator, losses, log-mel."""

from linearlab.models.vocoder.apnet import AmplitudePredictor, APNet, PhasePredictor
from linearlab.models.vocoder.hifigan import HiFiGANGenerator, ResBlock1
from linearlab.models.vocoder.losses import anti_wrapping, consistency_loss, phase_losses
from linearlab.models.vocoder.mel import LogMel, mel_filterbank

__all__ = [
    "APNet",
    "AmplitudePredictor",
    "HiFiGANGenerator",
    "LogMel",
    "PhasePredictor",
    "ResBlock1",
    "anti_wrapping",
    "consistency_loss",
    "mel_filterbank",
    "phase_losses",
]

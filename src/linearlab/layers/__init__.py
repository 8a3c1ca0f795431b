"""Layers: token mixers, drop-in ``nn.Linear`` replacements and output heads."""

from linearlab.layers.registry import create_mixer, list_mixers, register_mixer

__all__ = ["create_mixer", "list_mixers", "register_mixer"]

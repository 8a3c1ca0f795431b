"""Layers for images and volumes: non-causal grid attention (LiT, LinFusion), MobileNetV2's inverted
residual block and reversible coupling blocks. None of these is a causal sequence mixer, so none is in
:mod:`linearlab.layers.registry`; grid mixers have their own registry in ``grid_attention``."""

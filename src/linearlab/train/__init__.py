"""One explicit training loop with run directories, atomic checkpoints, resume and DDP."""

from linearlab.train.loop import TrainConfig, train

__all__ = ["TrainConfig", "train"]

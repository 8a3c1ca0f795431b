"""One explicit training loop with run directories, atomic checkpoints, resume and DDP."""

from linearlab.train.loop import TrainConfig, train
from linearlab.train.migu import migu_

__all__ = ["TrainConfig", "migu_", "train"]

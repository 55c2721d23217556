"""Training: configuration, data statistics, loss, loop, checkpoints.

    from eqcalc.train import load_config, train
    train(load_config("configs/example_train.yaml", {"max_epochs": 10}))
"""

from .config import TrainConfig, load_config
from .trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "load_config", "train"]

"""Meta-training: builders, the loop, checkpoints."""

from esmaml.training.trainer import Trainer, train

__all__ = ["Trainer", "train"]

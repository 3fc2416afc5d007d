"""Training utilities: the Trainer, metrics and losses for medical data, a class-balanced sampler."""

from .checkpoint import load_checkpoint, save_checkpoint
from .early_stopping import EarlyStopping
from .gan_trainer import GANTrainer
from .rng import deterministic_mode, seed_everything
from .trainer import Trainer

__all__ = ["EarlyStopping", "GANTrainer", "Trainer", "deterministic_mode", "load_checkpoint", "save_checkpoint", "seed_everything"]

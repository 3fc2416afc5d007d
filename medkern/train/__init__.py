"""Training utilities: the Trainer, metrics and losses for medical data, a class-balanced sampler."""

from .checkpoint import load_checkpoint, save_checkpoint
from .early_stopping import EarlyStopping
from .gan_trainer import GANTrainer
from .losses import DeepSupervisionLoss, DiceCELoss, DiceLoss, FocalLoss, class_weights, dice_loss, focal_loss, weighted_cross_entropy
from .metrics import (
    AUROC,
    ConfusionMatrix,
    accuracy,
    auroc,
    balanced_accuracy,
    confusion_matrix,
    dice,
    f1,
    iou,
    precision,
    recall,
    roc_curve,
    sensitivity,
    specificity,
)
from .rng import deterministic_mode, seed_everything
from .sampler import ClassBalancedSampler
from .trainer import Trainer

__all__ = [
    # training loops
    "Trainer", "GANTrainer", "EarlyStopping", "load_checkpoint", "save_checkpoint", "seed_everything",
    "deterministic_mode",
    # metrics
    "accuracy", "balanced_accuracy", "sensitivity", "recall", "specificity", "precision", "f1", "auroc",
    "confusion_matrix", "roc_curve", "dice", "iou", "ConfusionMatrix", "AUROC",
    # losses
    "class_weights", "weighted_cross_entropy", "focal_loss", "FocalLoss", "dice_loss", "DiceLoss", "DiceCELoss", "DeepSupervisionLoss",
    # sampling
    "ClassBalancedSampler",
]

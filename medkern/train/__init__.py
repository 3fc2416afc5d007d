"""Training utilities: the Trainer, metrics and losses for medical data, a class-balanced sampler."""

from .losses import DiceCELoss, DiceLoss, FocalLoss, class_weights, dice_loss, focal_loss, weighted_cross_entropy
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
    sensitivity,
    specificity,
)
from .sampler import ClassBalancedSampler

__all__ = [
    # metrics
    "accuracy", "balanced_accuracy", "sensitivity", "recall", "specificity", "precision", "f1", "auroc",
    "confusion_matrix", "dice", "iou", "ConfusionMatrix", "AUROC",
    # losses
    "class_weights", "weighted_cross_entropy", "focal_loss", "FocalLoss", "dice_loss", "DiceLoss", "DiceCELoss",
    # sampling
    "ClassBalancedSampler",
]

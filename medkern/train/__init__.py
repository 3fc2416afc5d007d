"""Training utilities: the Trainer, metrics and losses for medical data, a class-balanced sampler."""

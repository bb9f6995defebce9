"""Training: the fit wrapper, its callbacks, checkpoints and evaluation."""

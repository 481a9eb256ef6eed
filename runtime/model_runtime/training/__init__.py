"""Training: the focal loss, one booster per symbol, its quality numbers, and the `train` and `sweep` jobs."""

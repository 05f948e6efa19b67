"""The training and sampling engine: train loop, checkpoints, EMA, logging."""

"""Training: configuration, data statistics, loss, loop, checkpoints."""

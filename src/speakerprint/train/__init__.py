"""Training: typed config, the loop, checkpoints and schedules."""

"""What the user brings: model specs, user code, checkpoints, datasets, losses."""

"""Stage 2: heads over cached fc7 features, trained in memory."""

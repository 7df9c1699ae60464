"""Stage 3: metrics and reports that say what a number means."""

"""Label files, splits and the sample corpus."""

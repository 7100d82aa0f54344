"""What the data are in memory: ImageSet, batches and their augmentations, a user's picture made into model input."""

"""Skeleton data: formats, preparation, pre-normalization, datasets and augmentations."""

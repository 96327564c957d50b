"""Skeleton action-recognition data and models for the HaLP examples.

Data side: NTU RGB+D 60/120 and PKU-MMD II readers and preparation (``prepare``), the 2s-AGCN
pre-normalization, memory-mapped dataset loading, a procedural synthetic dataset in the NTU layout and
batched torch augmentations. See ``../shared/SPEC.md`` section 3 for the formats they implement.
"""

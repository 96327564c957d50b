"""Pretraining, evaluation protocols, checkpoints and the pieces training loops share."""

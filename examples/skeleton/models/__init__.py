"""Encoders and the MoCo wrapper."""

"""Former home of the NTU reader, now :mod:`skeleton.data.formats.ntu`. Re-exports the names ``synthetic`` still
imports from here; removed once it imports them from the new module."""

from .formats.ntu import NtuSampleId, motion_energy

__all__ = ["NtuSampleId", "motion_energy"]

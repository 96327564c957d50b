"""Former home of the NTU reader, now :mod:`skeleton.data.formats.ntu`. Re-exports the names ``datasets`` and
``synthetic`` still import from here; removed once they import the new module."""

from .formats.ntu import NtuSampleId, motion_energy

__all__ = ["NtuSampleId", "motion_energy"]

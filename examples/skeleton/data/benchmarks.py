"""Former home of the benchmark constants, now declared by the format adapters (:mod:`skeleton.data.formats`).
Re-exports the names ``synthetic`` still imports from here; removed once it imports them from
:mod:`skeleton.data.formats.ntu`."""

from .formats.ntu import NUM_BODIES, NUM_JOINTS

__all__ = ["NUM_BODIES", "NUM_JOINTS"]

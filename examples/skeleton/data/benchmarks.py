"""Former home of the benchmark constants, now declared by the format adapters (:mod:`skeleton.data.formats`) and
the prepared layout (:mod:`skeleton.data.prepare`). Re-exports the names ``datasets`` and ``synthetic`` still
import from here; removed once they import the new homes."""

from .formats.ntu import NTU60_MAX_ACTION, NTU60_MAX_SETUP, NUM_BODIES, NUM_JOINTS
from .prepare import SPLITS

__all__ = ["NTU60_MAX_ACTION", "NTU60_MAX_SETUP", "NUM_BODIES", "NUM_JOINTS", "SPLITS"]

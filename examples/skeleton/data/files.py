"""Former home of the prepared layout's file names, now in :mod:`skeleton.data.prepare`. Re-exports the names
``datasets`` still imports from here; removed once it imports them from ``prepare``."""

from .prepare import SUMMARY_FILE, data_file, label_file, num_frame_file

__all__ = ["SUMMARY_FILE", "data_file", "label_file", "num_frame_file"]

"""Console output that suits where it goes: progress bars on a terminal, plain lines in a job log."""

from __future__ import annotations

import sys
from typing import Optional, TextIO


def interactive(stream: Optional[TextIO] = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where tqdm draws) is a terminal.

    A progress bar redraws itself in place with carriage returns; in a job log or CI output every redraw is
    kept, megabytes per run. So bars are shown only on a terminal, and the loops print one line per epoch
    (or per tenth of the work) elsewhere.
    """
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False

"""Progress bars and errors: every bar is closed before an error is printed, so the error is the last line.

A tqdm bar left open when an exception passes through it is closed (and redrawn) only when the garbage collector
reaches it: after the CLI has printed the error, so the last line a person saw was "decoding images: 0%". The CLI
calls `close_bars()` before it prints an error or "interrupted"; code that owns a bar also closes it itself (a
`with tqdm(...)` block) for the Python API.
"""

from __future__ import annotations

import sys


def close_bars() -> None:
    """Close every tqdm bar still open in this process (each one finishes its line; leave=False ones clear it)."""
    std = sys.modules.get("tqdm.std")
    if std is None:  # tqdm never imported: no bar can be open
        return
    for bar in list(getattr(std.tqdm, "_instances", ())):
        try:
            bar.close()
        except (OSError, ValueError):  # the stream is already closed: nothing left to draw on
            pass

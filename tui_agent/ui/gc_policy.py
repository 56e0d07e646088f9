"""The TUI process's garbage-collector policy, in one place (no Textual import here).

Start-up builds ~100k objects that live as long as the app; collecting while they are built
was ~10 % of the first paint. After the first frame they are frozen out of the collector,
whose full passes over them stalled live updates by 60-190 ms, and young cycles (a repaint
makes many) are collected sooner instead of piling up into full passes.
"""

from __future__ import annotations

import gc


def hold_until_first_frame() -> None:
    """Before the app's imports; `settle_after_first_frame` turns the collector back on."""
    gc.disable()


def settle_after_first_frame() -> None:
    gc.freeze()
    gc.set_threshold(5000, 10, 10)
    gc.enable()

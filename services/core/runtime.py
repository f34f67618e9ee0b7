"""Process tuning shared by the hot-path services."""

from __future__ import annotations

import gc


def tune_garbage_collector() -> None:
    """Fewer cyclic collections: batches allocate many short-lived objects without cycles, and with the
    default thresholds the collector re-scans every long-lived object thousands of times a second
    (it cost the worker ~40 % of its time in profiles). Start-up objects are moved out of its sight.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

"""Failpoints for crash testing: `LABFLOW_FAILPOINTS="after-db-commit=0.1"` makes the process kill
itself (SIGKILL, as `kill -9` would) at that point with that probability. Unset in production: then
`hit` is a dictionary look-up that finds nothing.
"""

from __future__ import annotations

import os
import random
import signal

_RATES: dict[str, float] = {}
for _item in filter(None, os.environ.get("LABFLOW_FAILPOINTS", "").split(",")):
    _name, _, _rate = _item.partition("=")
    _RATES[_name.strip()] = float(_rate or 1.0)


def hit(name: str) -> None:
    rate = _RATES.get(name)
    if rate is not None and random.random() < rate:
        os.kill(os.getpid(), signal.SIGKILL)

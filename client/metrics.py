"""The machine figures a heartbeat carries, read with psutil."""

from __future__ import annotations

import os
from pathlib import Path

import psutil

from common.messages import Heartbeat


def heartbeat(seq: int, workdir: Path, processes: int) -> Heartbeat:
    memory = psutil.virtual_memory()
    try:
        disk_free = psutil.disk_usage(str(workdir)).free
    except OSError:
        disk_free = 0
    return Heartbeat(
        seq=seq,
        load=list(os.getloadavg()),
        # interval=None: the CPU use since the previous call, without blocking.
        cpu_percent=psutil.cpu_percent(interval=None),
        mem_available=memory.available,
        mem_total=memory.total,
        disk_free=disk_free,
        processes=processes,
    )

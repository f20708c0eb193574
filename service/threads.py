"""Keeps a worker's event loop ahead of the process's other threads on a busy core.

Besides the thread that runs the event loop, a worker has threads of its own: grpc's (one that
hands completed operations to the loop, and its event engine's, which do the sockets' work),
the log writer, and whatever else starts one. grpc's wake several times per call, and on a core
the loop has to itself (a worker per core, or pinned) each wake-up preempts the loop in the
middle of its Python: that costs more than the wake-up, as the loop's code and data are pushed
out of the core's caches each time. Given a lower priority (a higher nice value), those threads
run when the loop waits instead, which it does whenever it has nothing ready, grpc's work
included; with a core to spare, they run at once as before. Measured with benches/floor.py:
see README, "A worker's CPU against the floor of its stack".
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# How often threads started since are found: grpc starts its threads as it needs them.
RECHECK_S = 1.0
_TASKS = Path("/proc/self/task")


def lower_others(nice: int) -> int:
    """Gives every thread of this process other than the calling one a nice value of at least
    `nice` (Linux: each thread has its own); returns how many it changed. Raising a nice value
    needs no privilege, and only a privileged process could lower it again."""
    if not _TASKS.is_dir():
        return 0  # not Linux: nothing to do
    own = threading.get_native_id()
    changed = 0
    for entry in _TASKS.iterdir():
        thread = int(entry.name)
        if thread == own:
            continue
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < nice:
                os.setpriority(os.PRIO_PROCESS, thread, nice)
                changed += 1
        except ProcessLookupError:  # ended meanwhile
            continue
    return changed


async def keep_lowered(nice: int) -> None:
    """`lower_others` from the event loop's thread, now and every RECHECK_S; 0: never."""
    if nice <= 0:
        return
    while True:
        try:
            lower_others(nice)
        except PermissionError as error:  # not permitted here (a sandbox): all run as they would
            log.warning("could not lower the priority of the worker's other threads: %s", error)
            return
        await asyncio.sleep(RECHECK_S)

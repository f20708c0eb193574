"""Keeps a worker's event loop from being preempted by the process's other threads.

Besides the thread that runs the event loop, a worker has threads of its own: grpc's (one that
hands completed operations to the loop, and its event engine's, which do the sockets' work),
the log writer, and whatever else starts one. grpc's wake several times per call, and on a core
the loop has to itself (a worker per core, or pinned) each wake-up preempts the loop in the
middle of its Python: a loaded worker's loop was switched out about 8 times per unary call and
16 per stream, each time costing more than the wake-up itself, as the loop's code and data are
pushed out of the core's caches.

Linux's SCHED_BATCH policy is for exactly this: a batch thread never preempts the one running
when it wakes; it runs when that one waits (which the loop does whenever it has nothing ready,
grpc's work included), or at the scheduler's next tick, and it keeps its full share of the
CPU, so nothing starves. With a core to spare it runs at once, as before. Measured with
benches/floor.py: see README, "A worker's CPU against the floor of its stack".
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# How the other threads are scheduled (server.helper_thread_policy): `batch`, or as they are.
HelperPolicy = Literal["batch", "normal"]
# How often threads started since are found: grpc starts its threads as it needs them.
RECHECK_S = 1.0
_TASKS = Path("/proc/self/task")


def batch_others() -> int:
    """Puts every thread of this process other than the calling one, when it has the normal
    policy, under SCHED_BATCH (on Linux each thread has its own); returns how many it moved.
    Moving between these two policies needs no privilege."""
    if not _TASKS.is_dir() or not hasattr(os, "SCHED_BATCH"):
        return 0  # not Linux: nothing to do
    own = threading.get_native_id()
    moved = 0
    for entry in _TASKS.iterdir():
        thread = int(entry.name)
        if thread == own:
            continue
        try:
            if os.sched_getscheduler(thread) == os.SCHED_OTHER:
                os.sched_setscheduler(thread, os.SCHED_BATCH, os.sched_param(0))
                moved += 1
        except ProcessLookupError:  # ended meanwhile
            continue
    return moved


async def keep_batched(policy: HelperPolicy) -> None:
    """`batch_others` from the event loop's thread, now and every RECHECK_S, under `batch`."""
    if policy != "batch":
        return
    while True:
        try:
            batch_others()
        except OSError as error:  # not permitted here (a sandbox, say): all run as they would
            log.warning("could not change how the worker's other threads are scheduled: %s", error)
            return
        await asyncio.sleep(RECHECK_S)

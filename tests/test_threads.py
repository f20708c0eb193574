"""A worker's threads other than its event loop's are scheduled so as not to preempt it
(service/threads.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.threads import RECHECK_S, keep_batched
from tests.serving import Serve
from tests.test_workers import ECHO_ONLY

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir() or not hasattr(os, "SCHED_BATCH"), reason="Linux's per-thread policies"
)

# In a process of its own, so that pytest's own threads are left as they are.
BATCHING = """
import os, threading
from service.threads import batch_others
stop = threading.Event()
started = []
def wait():
    started.append(threading.get_native_id())
    stop.wait()
threads = [threading.Thread(target=wait) for _ in range(2)]
for thread in threads:
    thread.start()
while len(started) < 2:
    pass
moved = batch_others()
print(moved, batch_others(), os.sched_getscheduler(0), *(os.sched_getscheduler(tid) for tid in started))
stop.set()
"""


def test_every_thread_but_the_calling_one_is_batched_once() -> None:
    done = subprocess.run([sys.executable, "-c", BATCHING], capture_output=True, text=True, check=True)
    moved, again, own, *others = map(int, done.stdout.split())
    assert moved >= 2 and again == 0
    assert own == os.SCHED_OTHER, "the calling thread keeps its policy"
    assert others == [os.SCHED_BATCH, os.SCHED_BATCH]


def policies(pid: int) -> dict[int, int]:
    found = {}
    for entry in Path(f"/proc/{pid}/task").iterdir():
        try:
            found[int(entry.name)] = os.sched_getscheduler(int(entry.name))
        except ProcessLookupError:
            continue
    return found


def served_policies(tmp_path: Path, server: str, *, after_s: float | None = None) -> tuple[int, dict[int, int]]:
    """The policy of a worker's own thread and of its other threads, once these are all batched
    or, when they are not to be, `after_s` after it answers."""
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{drain_delay_s: 0{server}}}\n" + ECHO_ONLY)
    serve = Serve(config)
    try:
        (pid,) = serve.listening()
        serve.answering()
        if after_s is not None:
            time.sleep(after_s)
        deadline = time.monotonic() + (0 if after_s is not None else 10)
        found = policies(pid)
        while time.monotonic() < deadline and os.SCHED_OTHER in (p for tid, p in found.items() if tid != pid):
            time.sleep(0.1)
            found = policies(pid)
        return found.pop(pid), found
    finally:
        serve.stop()


def test_a_worker_batches_its_other_threads_not_its_event_loop(tmp_path: Path) -> None:
    own, others = served_policies(tmp_path, "")
    assert own == os.SCHED_OTHER
    assert len(others) >= 2, "grpc's threads, the log writer's"
    assert set(others.values()) == {os.SCHED_BATCH}


def test_a_worker_leaves_its_threads_alone_when_told_to(tmp_path: Path) -> None:
    own, others = served_policies(tmp_path, ", helper_thread_policy: normal", after_s=2 * RECHECK_S)
    assert own == os.SCHED_OTHER
    assert set(others.values()) == {os.SCHED_OTHER}


async def test_a_worker_not_allowed_to_batch_says_so_once_and_serves_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*_: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refused)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        await asyncio.wait_for(keep_batched("batch"), timeout=RECHECK_S / 2)
    finally:
        stop.set()
        other.join()
    assert [r.getMessage() for r in caplog.records] == [
        "could not change how the worker's other threads are scheduled: [Errno 1] Operation not permitted"
    ]

"""A worker's threads other than its event loop's run at a lower priority (service/threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.threads import RECHECK_S
from tests.serving import Serve
from tests.test_workers import ECHO_ONLY

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="threads have their own nice on Linux")

# In a process of its own: a nice value cannot be lowered again, and pytest's own threads must not
# be touched.
LOWERING = """
import os, threading
from service.threads import lower_others
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
changed = lower_others(7)
print(changed, lower_others(7), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
      *(os.getpriority(os.PRIO_PROCESS, tid) for tid in started))
stop.set()
"""


def test_every_thread_but_the_calling_one_is_lowered_once() -> None:
    done = subprocess.run([sys.executable, "-c", LOWERING], capture_output=True, text=True, check=True)
    changed, again, own, *others = map(int, done.stdout.split())
    assert changed >= 2 and again == 0
    assert own == os.getpriority(os.PRIO_PROCESS, 0), "the calling thread keeps its priority"
    assert others == [7, 7]


def nice_values(pid: int) -> dict[int, int]:
    values = {}
    for entry in Path(f"/proc/{pid}/task").iterdir():
        try:
            values[int(entry.name)] = os.getpriority(os.PRIO_PROCESS, int(entry.name))
        except ProcessLookupError:
            continue
    return values


def served_nice_values(tmp_path: Path, server: str, *, after_s: float = 0.0) -> tuple[int, dict[int, int]]:
    """The worker's own thread's nice value and its other threads', once they have settled (or,
    when none changes, `after_s` after it answers)."""
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{drain_delay_s: 0{server}}}\n" + ECHO_ONLY)
    serve = Serve(config)
    try:
        (pid,) = serve.listening()
        serve.answering()
        time.sleep(after_s)
        deadline = time.monotonic() + 10
        values = nice_values(pid)
        while time.monotonic() < deadline and set(values.values()) - {values[pid], 10}:
            time.sleep(0.1)
            values = nice_values(pid)
        return values.pop(pid), values
    finally:
        serve.stop()


def test_a_worker_lowers_its_other_threads_not_its_event_loop(tmp_path: Path) -> None:
    own, others = served_nice_values(tmp_path, "")
    assert own == os.getpriority(os.PRIO_PROCESS, 0)
    assert len(others) >= 2, "grpc's threads, the log writer's"
    assert set(others.values()) == {10}


def test_a_worker_leaves_its_threads_alone_when_told_to(tmp_path: Path) -> None:
    own, others = served_nice_values(tmp_path, ", helper_thread_nice: 0", after_s=2 * RECHECK_S)
    assert set(others.values()) == {own}

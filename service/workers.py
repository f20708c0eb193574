"""`serve --workers N`: N gateway processes sharing one port through SO_REUSEPORT.

The kernel spreads incoming connections over the workers, so the service uses
every core despite Python's GIL. Each worker is a whole gateway with its own
router, but the routers keep their state (rate limits, circuit breakers,
cool-downs, latency estimates, counters, attempts in flight, round-robin
positions, token calibration) in one file mapped by all (under /dev/shm): N
workers admit a deployment's rpm, not N times it, and a circuit one opens is
open for all.
The parent makes that file's directory, starts the workers, forwards
SIGTERM/SIGINT (stop) and SIGHUP (reload the config) to them, supervises them,
and removes the file at the end:

- a worker that dies once it has served (a crash, the OOM killer, a SIGKILL) is
  replaced, and the others serve on meanwhile; one that keeps dying soon after it
  started is replaced after a pause that doubles each time (up to a minute);
- a worker that dies before it is listening (a port taken, a bad environment)
  cannot be helped by starting it again: the parent stops the others and exits 1.

The first worker (and whichever replaces it) also serves `telemetry.metrics_listen`,
`server.admin_listen` and the OTLP metrics push: what they report lives in the shared file,
so one worker's figures are the host's.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from pathlib import Path
from types import FrameType

from service.config import Config, ConfigError, load_config
from service.logs import LogSettings, configure_logging
from service.server import Sibling, run_gateway

log = logging.getLogger(__name__)

# Memory, not disk, where there is such a file system: the routers' shared state lives here.
_SHARED_MEMORY = Path("/dev/shm")
# A worker that served at least this long before dying is replaced at once.
STEADY_S = 30.0
# The pause before replacing a worker that died sooner: doubled each time, up to the last.
FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 60.0


class _Slot:
    """One of the N workers, across the processes that have filled it."""

    def __init__(self, index: int, start: Callable[[_Slot], tuple[BaseProcess, Event]]) -> None:
        self.index = index
        self._start = start
        self.process: BaseProcess | None = None
        self.ready: Event | None = None
        self.started_at = 0.0
        self.pause_s = 0.0
        # When a replacement is due; None while a process fills the slot.
        self.due_at: float | None = time.monotonic()

    @property
    def name(self) -> str:
        return f"switchboard-worker-{self.index}"

    def start_if_due(self, now: float) -> None:
        if self.due_at is not None and self.due_at <= now:
            self.process, self.ready = self._start(self)
            self.started_at, self.due_at = now, None

    def replace_later(self, now: float) -> float:
        """Schedules a replacement; returns the pause before it."""
        if now - self.started_at >= STEADY_S:
            self.pause_s = 0.0
        else:
            self.pause_s = min(LONGEST_PAUSE_S, max(FIRST_PAUSE_S, self.pause_s * 2))
        self.due_at = now + self.pause_s
        return self.pause_s


def run_workers(
    config: Config, listen: str, workers: int, log_settings: LogSettings, *, config_path: Path | None = None
) -> int:
    """Start `workers` gateway processes on `listen` and supervise them until stopped; returns
    the exit code."""
    if listen.rsplit(":", 1)[-1] == "0":
        raise OSError(f"--workers {workers} needs a fixed port to share, not {listen}")
    context = multiprocessing.get_context("spawn")
    memory = _SHARED_MEMORY if _SHARED_MEMORY.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="switchboard-", dir=memory) as shared:
        state = Path(shared) / "router-state"

        def start(slot: _Slot) -> tuple[BaseProcess, Event]:
            ready = context.Event()
            arguments = (config, listen, log_settings, config_path, state, ready, slot.index == 0)
            process = context.Process(target=_worker, args=arguments, name=slot.name)
            process.start()
            return process, ready

        slots = [_Slot(i, start) for i in range(workers)]
        return _Supervisor(slots).run(workers, listen)


class _Supervisor:
    def __init__(self, slots: list[_Slot]) -> None:
        self.slots = slots
        self.stopping = False
        self.code = 0

    def run(self, workers: int, listen: str) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        signal.signal(signal.SIGHUP, self._forward)
        now = time.monotonic()
        for slot in self.slots:
            slot.start_if_due(now)
        log.info("started %d workers on %s", workers, listen)
        while True:
            running = [slot for slot in self.slots if slot.process is not None]
            due = [slot.due_at for slot in self.slots if slot.due_at is not None]
            if not running and not due:
                return self.code
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            finished = wait([slot.process.sentinel for slot in running if slot.process is not None], timeout)
            now = time.monotonic()
            for slot in running:
                if slot.process is not None and slot.process.sentinel in finished:
                    self._ended(slot, now)
            for slot in self.slots:
                slot.start_if_due(now)

    def _ended(self, slot: _Slot, now: float) -> None:
        process, ready = slot.process, slot.ready
        assert process is not None and ready is not None
        process.join()
        slot.process = None
        if self.stopping:
            # A worker stopped by the signal passed on to it (before it could install its own
            # handler, while starting up) stopped as asked.
            if process.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT):
                log.error("worker %s exited with code %s while stopping", slot.name, process.exitcode)
                self.code = 1
        elif not ready.is_set():
            log.error(
                "worker %s exited with code %s before it was listening; stopping the others",
                slot.name,
                process.exitcode,
            )
            self.code = 1
            self._stop(signal.SIGTERM, None)
        else:
            pause_s = slot.replace_later(now)
            log.error("worker %s exited with code %s; replacing it in %.1fs", slot.name, process.exitcode, pause_s)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for slot in self.slots:
            slot.due_at = None
        self._forward(signum, _frame)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.pid is not None and slot.process.is_alive():
                os.kill(slot.process.pid, signum)


def _worker(
    config: Config,
    listen: str,
    log_settings: LogSettings,
    config_path: Path | None,
    shared_state: Path,
    ready: Event,
    serves_host: bool,
) -> None:
    configure_logging(log_settings)
    if config_path is not None:
        # A replacement serves the file as it is now, as the workers that reloaded it do.
        try:
            config = load_config(config_path)
        except ConfigError as error:
            log.error("%s; serving the config the service started with", error)
    sibling = Sibling(shared_state, ready.set, serves_host, reload_all=_reload_all)
    run_gateway(config, listen, config_path=config_path, sibling=sibling)


def _reload_all() -> None:
    """The parent passes SIGHUP on to every worker."""
    os.kill(os.getppid(), signal.SIGHUP)

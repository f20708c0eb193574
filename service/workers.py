"""`serve --workers N`: N gateway processes sharing one port through SO_REUSEPORT.

The kernel spreads incoming connections over the workers, so the service uses
every core despite Python's GIL. Each worker is a whole gateway with its own
router: statistics, circuit breakers and rate-limit budgets are per worker
(a deployment's rpm is enforced per worker, so N workers admit up to N times
it). The parent only starts the workers, forwards SIGTERM/SIGINT (stop) and SIGHUP
(reload the config) to them and waits; if one dies unexpectedly it stops the others
and exits non-zero.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from service.config import Config
from service.logs import configure_logging
from service.server import run_gateway

log = logging.getLogger(__name__)


def run_workers(config: Config, listen: str, workers: int, log_level: str, *, config_path: Path | None = None) -> int:
    """Start `workers` gateway processes on `listen` and wait for them; returns the exit code."""
    if listen.rsplit(":", 1)[-1] == "0":
        raise OSError(f"--workers {workers} needs a fixed port to share, not {listen}")
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker, args=(config, listen, log_level, config_path), name=f"switchboard-worker-{i}")
        for i in range(workers)
    ]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            _signal(process, signum)

    def forward_reload(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            _signal(process, signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    signal.signal(signal.SIGHUP, forward_reload)
    for process in processes:
        process.start()
    log.info("started %d workers on %s", workers, listen)
    alive = list(processes)
    code = 0
    while alive:
        finished = wait([p.sentinel for p in alive])
        for process in [p for p in alive if p.sentinel in finished]:
            process.join()
            alive.remove(process)
            # A worker stopped by the signal passed on to it (before it could install its own
            # handler, while starting up) stopped as asked.
            stopped_as_asked = stopping and process.exitcode in (0, -signal.SIGTERM, -signal.SIGINT)
            if not stopped_as_asked:
                log.error("worker %s exited with code %s; stopping the others", process.name, process.exitcode)
                code = 1
                stopping = True
                for other in alive:
                    _signal(other, signal.SIGTERM)
    return code


def _signal(process: BaseProcess, signum: int) -> None:
    if process.pid is not None and process.is_alive():
        os.kill(process.pid, signum)


def _worker(config: Config, listen: str, log_level: str, config_path: Path | None) -> None:
    configure_logging(log_level)
    run_gateway(config, listen, share_port=True, config_path=config_path)

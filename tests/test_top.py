"""`switchboard top` in a real terminal (tmux): the live table, sorting by key, quitting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.loopback import free_port
from tests.serving import Serve
from tests.test_cli import grpcurl

ECHO = "model_groups: [{name: echo, deployments: [{id: echo, type: echo, model: echo, context_window: 1000}]}]\n"


class Terminal:
    """A tmux server of the test's own (its own socket), running one command in a 160x40 window."""

    def __init__(self, command: str) -> None:
        binary = shutil.which("tmux")
        if binary is None:
            pytest.fail("tmux is missing: `make system-deps` installs it")
        self.tmux = [binary, "-L", f"switchboard-test-{os.getpid()}"]
        env = {**os.environ, "TERM": "xterm-256color"}
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-s", "top", "-x", "160", "-y", "40", command], check=True, env=env
        )

    def screen(self) -> str:
        done = subprocess.run([*self.tmux, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True)
        return done.stdout

    def wait_for(self, text: str, within_s: float = 15.0) -> str:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never showed; the screen:\n{self.screen()}")

    def press(self, key: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "top", key], check=True)

    def ended(self, within_s: float = 10.0) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if subprocess.run([*self.tmux, "has-session", "-t", "top"], capture_output=True).returncode != 0:
                return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


def test_top_shows_sorts_and_quits_in_a_real_terminal(tmp_path: Path) -> None:
    admin = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{drain_delay_s: 0, admin_listen: '127.0.0.1:{admin}'}}\n" + ECHO)
    gateway = Serve(config)
    terminal = None
    try:
        gateway.listening()
        request = {"model": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "hi"}]}]}
        for _ in range(3):
            grpcurl("-d", json.dumps(request), f"127.0.0.1:{gateway.port}", "switchboard.v1.Gateway/Chat")
        terminal = Terminal(f"{sys.executable} -m service top --admin 127.0.0.1:{admin} --interval 0.2")
        screen = terminal.wait_for("switchboard top")
        assert "requests v" in screen and "deployment" in screen
        (row,) = [line for line in screen.splitlines() if " echo " in line]
        assert " 3 " in row, row  # three requests
        terminal.press("s")
        assert "failures v" in terminal.wait_for("failures v")
        terminal.press("r")
        terminal.wait_for("failures ^")
        terminal.press("q")
        assert terminal.ended(), "q quits"
    finally:
        if terminal is not None:
            terminal.close()
        gateway.stop()

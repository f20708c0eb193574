"""The `switchboard` command as a user runs it, driven by grpcurl through server reflection."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

GRPCURL = shutil.which("grpcurl")


@pytest.fixture
def server() -> Iterator[str]:
    """The gateway started by its console entry point on the embedded default, on a free port."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    port = None
    lines: list[str] = []
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"listening on .* \(port (\d+),", line):
            port = match.group(1)
    assert port, "server did not start:\n" + "".join(lines)
    yield f"127.0.0.1:{port}"
    process.send_signal(signal.SIGINT)  # Ctrl-C: no drain delay
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 0, rest
    assert "draining for 0.0s" in rest and "stopped" in rest


def grpcurl(*args: str, data: Mapping[str, object] | None = None) -> str:
    assert GRPCURL, "grpcurl is not on PATH: run `make tools` (the test target puts .cache/bin on PATH)"
    command = [GRPCURL, "-plaintext"]
    if data is not None:
        command += ["-d", json.dumps(data)]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def json_documents(text: str) -> list[Any]:
    """grpcurl prints a stream as JSON documents one after another."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


def test_grpcurl_lists_describes_and_calls(server: str) -> None:
    services = grpcurl(server, "list").split()
    assert {"switchboard.v1.Gateway", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(
        services
    )
    described = grpcurl(server, "describe", "switchboard.v1.Gateway")
    for method in ("Chat", "ChatStream", "Route", "ListModels"):
        assert f"rpc {method}" in described
    assert "max_tokens" in grpcurl(server, "describe", "switchboard.v1.GenerationParams")

    health = json.loads(grpcurl(server, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}

    request = {"model": "echo", "messages": [{"role": "ROLE_USER", "content": [{"text": "hello grpcurl"}]}]}
    answer = json.loads(grpcurl(server, "switchboard.v1.Gateway/Chat", data=request))
    assert answer["message"]["content"] == [{"text": "hello grpcurl"}]
    assert answer["served"]["deployment"] == "echo"

    events = json_documents(grpcurl(server, "switchboard.v1.Gateway/ChatStream", data=request))
    assert "start" in events[0] and "end" in events[-1]
    assert "".join(e["delta"]["text"] for e in events if "delta" in e) == "hello grpcurl"

    route = json.loads(grpcurl(server, "switchboard.v1.Gateway/Route", data={"model": "auto"}))
    assert route["model_group"] == "echo" and route["candidates"][0]["deployment"] == "echo"

    models = json.loads(grpcurl(server, "switchboard.v1.Gateway/ListModels"))
    assert [g["name"] for g in models["model_groups"]] == ["echo"]


def test_bad_config_exits_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model_groups:\n  - name: g\n    deployments: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "service", "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert f"{path}:3: model_groups[0].deployments: must not be empty" in result.stderr


def test_check_config_prints_what_the_config_compiles_to(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        """
default_group: chat
deployments:
  - {id: shared, type: echo, model: e, context_window: 1000, region: eu, rpm: 60}
model_groups:
  - name: chat
    strategy: least_in_flight
    deployments: [shared, {id: big, type: echo, model: e, context_window: 9000, priority: 1}]
  - name: keyed
    deployments:
      - {id: keyed, type: gemini, model: g, api_key_env: UNSET_TEST_KEY, skip_without_key: true, context_window: 1}
policies:
  - id: code
    when: {field: task, eq: code}
    route_to: {groups: [keyed]}
    fallback: [{deployments: [big]}]
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "UNSET_TEST_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "service", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: OK"
    assert "  chat (least_in_flight): shared, big" in lines
    assert any(
        line.startswith("  shared: echo e, region eu, context window 1000,") and "rpm 60" in line for line in lines
    )
    assert "policies: none (each request routes by its model group's strategy)" in lines
    assert "left out, their credentials missing: keyed" in lines
    assert "  and with them model groups: keyed" in lines
    assert "  and with them policies: code" in lines

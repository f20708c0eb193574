"""The thin Python client (switchboard.Client) against a real gateway: text in and out, a stream
as an iterator of text, errors raised with their details decoded; and the examples in examples/,
each run as a user would run it, against a gateway this test started."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.api.switchboard.v1 import gateway_pb2 as pb
from switchboard import Client, SwitchboardError
from tests.conftest import StartServer
from tests.keyed import StartKeyed
from tests.mock_openai import MockOpenAI
from tests.test_auth import keyed

ROOT = Path(__file__).parent.parent
BIN = ROOT / ".cache" / "bin"

ECHO = """
model_groups:
  - name: echo
    deployments:
      - {id: echo, type: echo, model: echo, region: local, context_window: 131072, capabilities: [streaming]}
"""


def with_upstream(upstream: MockOpenAI) -> str:
    return (
        ECHO
        + f"""
  - name: limited
    deployments:
      - {{id: limited, type: echo, model: echo, context_window: 1000, rpm: 1}}
  - name: failing
    deployments:
      - {{id: failing, type: openai_compatible, model: m, base_url: '{upstream.base_url}', context_window: 1000}}
"""
    )


async def test_chat_stream_and_route_in_plain_text(start_server: StartServer) -> None:
    gateway = await start_server(ECHO)
    async with Client(f"127.0.0.1:{gateway.port}", timeout_s=5.0) as client:
        answer = await client.chat("hello there", model="echo", system="be brief", max_tokens=50)
        assert (answer.text, answer.deployment, len(answer.id)) == ("hello there", "echo", 32)
        stream = client.stream("one two three", model="echo")
        assert await stream.text() == "one two three"
        assert stream.start is not None and stream.start.served.deployment == "echo"
        assert stream.end is not None and stream.end.finish_reason == pb.FINISH_REASON_STOP
        decision = await client.route("hi", model="echo")
        assert [c.deployment for c in decision.candidates] == ["echo"]
        whole = [pb.Message(role=pb.ROLE_USER, content=[pb.ContentPart(text="given whole")])]
        assert (await client.chat(whole, model="echo")).text == "given whole"


async def test_errors_are_raised_with_their_details_decoded(start_server: StartServer, upstream: MockOpenAI) -> None:
    upstream.fail_every = 1
    gateway = await start_server(with_upstream(upstream))
    async with Client(f"127.0.0.1:{gateway.port}", timeout_s=5.0) as client:
        with pytest.raises(SwitchboardError) as bad:
            await client.chat("hi", model="no-such-group")
        assert bad.value.code.name == "INVALID_ARGUMENT" and bad.value.reason == ""
        assert bad.value.field_violations == [
            ("model", "unknown model group 'no-such-group'; known groups: echo, failing, limited")
        ]

        await client.chat("hi", model="limited")
        with pytest.raises(SwitchboardError) as limited:
            await client.chat("hi", model="limited")
        assert (limited.value.code.name, limited.value.reason) == ("RESOURCE_EXHAUSTED", "RATE_LIMITED")
        assert limited.value.retry_after_s is not None and 0 < limited.value.retry_after_s <= 60
        assert "rejected.limited" in limited.value.metadata

        with pytest.raises(SwitchboardError) as failed:
            await client.chat("hi", model="failing")
        assert (failed.value.code.name, failed.value.reason) == ("UNAVAILABLE", "UPSTREAM_FAILED")
        assert [(a.deployment, a.outcome) for a in failed.value.attempts] == [("failing", pb.OUTCOME_SERVER_ERROR)]

        with pytest.raises(SwitchboardError) as off:
            await client.feedback("some-call", score=1.0)
        assert (off.value.code.name, off.value.reason) == ("FAILED_PRECONDITION", "NOT_ENABLED")

        with pytest.raises(SwitchboardError) as streamed:
            await client.stream("hi", model="no-such-group").text()
        assert streamed.value.field_violations[0][0] == "model"


async def test_each_call_has_a_deadline(start_server: StartServer, upstream: MockOpenAI) -> None:
    upstream.latency_s = 5.0
    gateway = await start_server(with_upstream(upstream))
    async with Client(f"127.0.0.1:{gateway.port}", timeout_s=0.3) as client:
        with pytest.raises(SwitchboardError) as late:
            await client.chat("hi", model="failing")
    assert late.value.code.name == "DEADLINE_EXCEEDED"


EXPECTED = [
    "chat: hello from {language} (deployment echo, 3 tokens out)",
    "stream: one two three (deployment echo, FINISH_REASON_STOP)",
    "route: group echo, first echo of 1 candidates",
    "error: {code}",
    "  bad request: model: unknown model group 'no-such-group'; known groups: echo",
]


def assert_printed(lines: list[str], language: str, code: str) -> None:
    """The example printed EXPECTED, in its language's name for the status code; the route line
    may end with the strategy (the Go, Java and Node examples print it)."""
    expected = [line.format(language=language, code=code) for line in EXPECTED]
    assert [lines[0], lines[1], *lines[3:]] == [expected[0], expected[1], *expected[3:]]
    assert lines[2].startswith(expected[2])


async def run(command: list[str]) -> list[str]:
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


async def test_the_python_example_runs(start_server: StartServer) -> None:
    gateway = await start_server(ECHO)
    lines = await run([sys.executable, "examples/python/example.py", "--target", f"127.0.0.1:{gateway.port}"])
    assert_printed(lines, "Python", "INVALID_ARGUMENT")


@pytest.fixture(scope="module")
def built_examples() -> None:
    """Generates the Go and TypeScript code from protos/ and builds both examples, once."""
    done = subprocess.run(["make", "-s", "examples"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.usefixtures("built_examples")
async def test_the_go_example_builds_from_the_protos_and_runs(start_server: StartServer) -> None:
    gateway = await start_server(ECHO)
    lines = await run([str(BIN / "example-go"), "-target", f"127.0.0.1:{gateway.port}", "-model", "echo"])
    assert_printed(lines, "Go", "InvalidArgument")


@pytest.mark.usefixtures("built_examples")
async def test_the_typescript_client_passes_its_own_tests(start_server: StartServer) -> None:
    """clients/typescript's tests (node's test runner) against a gateway started here."""
    gateway = await start_server(ECHO)
    environment = {**os.environ, "SWITCHBOARD_TARGET": f"127.0.0.1:{gateway.port}"}
    done = await asyncio.to_thread(
        subprocess.run,
        ["npm", "test", "--silent"],
        cwd=ROOT / "clients" / "typescript",
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# pass 5" in done.stdout and "# fail 0" in done.stdout


@pytest.mark.usefixtures("built_examples")
async def test_the_java_example_builds_from_the_protos_and_runs(start_server: StartServer) -> None:
    gateway = await start_server(ECHO)
    java = ROOT / "examples" / "java" / "target"
    classpath = f"{java / 'classes'}:{java / 'lib'}/*"
    target = f"127.0.0.1:{gateway.port}"
    lines = await run(["java", "-cp", classpath, "dev.switchboard.example.Example", target, "echo"])
    assert_printed(lines, "Java", "INVALID_ARGUMENT")


@pytest.mark.usefixtures("built_examples")
async def test_the_node_example_builds_from_the_protos_and_runs(start_server: StartServer) -> None:
    gateway = await start_server(ECHO)
    example = str(ROOT / "examples" / "node" / "dist" / "example.js")
    lines = await run(["node", example, "--target", f"127.0.0.1:{gateway.port}", "--model", "echo"])
    assert_printed(lines, "Node", "INVALID_ARGUMENT")


async def test_the_api_key_is_sent_and_a_refusal_decoded(tmp_path: Path, start_keyed: StartKeyed) -> None:
    gateway = await start_keyed(keyed(tmp_path))
    made = await gateway.create_key("acme")
    target = f"127.0.0.1:{gateway.gateway.port}"
    async with Client(target, api_key=made.secret, timeout_s=5.0) as client:
        assert (await client.chat("hello", model="chat")).deployment == "eu-echo", "acme's region is eu"
        with pytest.raises(SwitchboardError) as other:
            await client.chat("hello", model="other")
        assert (other.value.code.name, other.value.reason) == ("PERMISSION_DENIED", "PERMISSION_DENIED")
    async with Client(target, api_key="sb-not-a-key", timeout_s=5.0) as stranger:
        with pytest.raises(SwitchboardError) as refused:
            await stranger.chat("hello", model="chat")
        assert (refused.value.code.name, refused.value.reason) == ("UNAUTHENTICATED", "UNAUTHENTICATED")

"""Who is calling: API keys made through the Admin API and kept hashed in a SQLite store, tenants
of the config and what they may use, every way a caller is refused, and no key in any text."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2

from service.api.switchboard.admin.v1 import admin_pb2, admin_pb2_grpc
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.config import ConfigError, parse_config
from service.identity.keys import KeyHasher
from service.server import Gateway
from tests.conftest import StartServer, status_details
from tests.keyed import ADMIN_KEY, ENVIRON, SECRET, Keyed, StartKeyed, bearer, refused
from tests.test_e2e import chat_request

DEPLOYMENTS = """
model_groups:
  - name: chat
    deployments:
      - {id: eu-echo, type: echo, model: echo-eu, region: eu, context_window: 1000}
      - {id: us-echo, type: echo, model: echo-us, region: us, context_window: 1000}
  - name: other
    deployments:
      - {id: other-echo, type: echo, model: other, region: eu, context_window: 1000}
"""


def keyed(tmp_path: Path, tenants: str = "", mode: str = "keys") -> str:
    tenants = (
        tenants
        or """
  acme: {model_groups: [chat], regions: [eu], rpm: 100}
  beta: {}
"""
    )
    return f"""
server: {{admin_listen: '127.0.0.1:0'}}
auth: {{mode: {mode}, admin_key_env: SWITCHBOARD_ADMIN_KEY}}
store: {{path: '{tmp_path / "keys.db"}', refresh_interval_s: 0.1}}
tenants:{tenants}
{DEPLOYMENTS}"""


@pytest.fixture
async def keyed_gateway(tmp_path: Path, start_keyed: StartKeyed) -> Keyed:
    return await start_keyed(keyed(tmp_path))


async def test_a_key_made_through_the_admin_api_names_its_tenant(
    keyed_gateway: Keyed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    made = await keyed_gateway.create_key("acme", name="ci")
    assert made.secret.startswith(f"sb-{made.key.id}-") and made.key.state == "active"
    answer = await keyed_gateway.chat(made.secret, model="chat")
    assert answer.served.deployment == "eu-echo", "acme may use eu only: the us deployment is never chosen"
    (line,) = [r.access for r in caplog.records if r.name == "switchboard.access"]  # type: ignore[attr-defined]
    assert (line["tenant"], line["key_id"]) == ("acme", made.key.id)
    listed = await keyed_gateway.admin.ListKeys(admin_pb2.ListKeysRequest(tenant="acme"), metadata=bearer(ADMIN_KEY))
    assert [(k.id, k.name, k.state) for k in listed.keys] == [(made.key.id, "ci", "active")]
    assert not listed.keys[0].HasField("revoked_at")
    assert made.secret not in caplog.text and SECRET not in caplog.text and ADMIN_KEY not in caplog.text


async def test_every_missing_or_bad_key_is_unauthenticated_and_says_no_more(keyed_gateway: Keyed) -> None:
    made = await keyed_gateway.create_key("acme")
    wrong_secret = made.secret[:-4] + ("AAAA" if not made.secret.endswith("AAAA") else "BBBB")
    cases = {
        None: "no API key",
        "not-a-key": "invalid API key",
        "sb-000000000000-" + "A" * 43: "invalid API key",  # well formed, unknown id
        wrong_secret: "invalid API key",  # a real id, the wrong secret: not even the id is confirmed
    }
    for key, message in cases.items():
        error = await refused(keyed_gateway.chat(key))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and message in (error.details() or "")
        assert made.key.id not in (error.details() or "")
        (info,) = status_details(error)
        assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "UNAUTHENTICATED"
    requests: dict[str, object] = {
        "ChatStream": chat_request(),
        "Route": pb.RouteRequest(model="chat"),
        "ListModels": pb.ListModelsRequest(),
    }
    for method, request in requests.items():
        response = getattr(keyed_gateway.stub, method)(request)
        error = await refused(_drain(response) if method == "ChatStream" else response)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, method


async def _drain(stream: object) -> None:
    async for _ in stream:  # type: ignore[attr-defined]
        pass


async def test_a_revoked_or_expired_key_stops_working(keyed_gateway: Keyed) -> None:
    made = await keyed_gateway.create_key("acme")
    await keyed_gateway.chat(made.secret)
    revoked = await keyed_gateway.admin.RevokeKey(
        admin_pb2.RevokeKeyRequest(id=made.key.id), metadata=bearer(ADMIN_KEY)
    )
    assert revoked.key.state == "revoked" and revoked.key.HasField("revoked_at")
    error = await refused(keyed_gateway.chat(made.secret))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and f"API key {made.key.id} is revoked" in (
        error.details() or ""
    )

    soon = Timestamp()
    soon.FromNanoseconds(int((time.time() + 0.3) * 1e9))
    brief = await keyed_gateway.create_key("acme", expires_at=soon)
    await keyed_gateway.chat(brief.secret)
    await asyncio.sleep(0.35)
    error = await refused(keyed_gateway.chat(brief.secret))
    assert f"API key {brief.key.id} is expired" in (error.details() or "")
    unknown = await refused(
        keyed_gateway.admin.RevokeKey(admin_pb2.RevokeKeyRequest(id="nope"), metadata=bearer(ADMIN_KEY))
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND


async def test_a_key_expired_by_hand_in_the_store_stops_working(tmp_path: Path, keyed_gateway: Keyed) -> None:
    """An operator's own UPDATE, which neither adds nor revokes a key, is noticed too."""
    made = await keyed_gateway.create_key("acme")
    await keyed_gateway.chat(made.secret)
    with sqlite3.connect(tmp_path / "keys.db") as db:
        db.execute("UPDATE keys SET expires_at = ? WHERE id = ?", (time.time() - 1, made.key.id))
    await asyncio.sleep(0.3)  # refresh_interval_s is 0.1
    error = await refused(keyed_gateway.chat(made.secret))
    assert f"API key {made.key.id} is expired" in (error.details() or "")


async def test_a_tenant_asking_for_what_it_may_not_use_is_denied_by_name(keyed_gateway: Keyed) -> None:
    acme = (await keyed_gateway.create_key("acme")).secret
    error = await refused(keyed_gateway.chat(acme, model="other"))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "tenant 'acme' may not use model group 'other' (allowed: chat)" in (error.details() or "")
    request = chat_request(model="chat")
    request.routing.allowed_regions.append("us")
    error = await refused(keyed_gateway.stub.Chat(request, metadata=bearer(acme)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "may not use regions us (allowed: eu)" in (
        error.details() or ""
    )
    beta = (await keyed_gateway.create_key("beta")).secret
    assert (await keyed_gateway.chat(beta, model="other")).served.deployment == "other-echo", "beta may use all"
    in_flight = {s.deployment: s.in_flight for s in keyed_gateway.gateway.router.stats()}
    assert set(in_flight.values()) == {0}, "a denied call gives its lease back"


async def test_the_admin_api_wants_its_own_credential_never_a_data_plane_key(keyed_gateway: Keyed) -> None:
    made = await keyed_gateway.create_key("acme")
    for metadata in ((), bearer(made.secret), bearer("wrong")):
        error = await refused(keyed_gateway.admin.GetStats(admin_pb2.GetStatsRequest(), metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refused(keyed_gateway.create_key("nobody"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no tenant 'nobody' (known: acme, beta)" in (
        error.details() or ""
    )


async def test_an_address_that_keeps_failing_is_refused_for_the_minute(tmp_path: Path, start_keyed: StartKeyed) -> None:
    """Its failures are; a good key from the same address (a proxy's, a NAT's) still passes."""
    gateway = await start_keyed(keyed(tmp_path).replace("mode: keys,", "mode: keys, max_failures_per_minute: 3,"))
    made = await gateway.create_key("beta")
    for _ in range(3):
        assert (await refused(gateway.chat("bad"))).code() == grpc.StatusCode.UNAUTHENTICATED
    error = await refused(gateway.chat("bad"))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await gateway.chat(made.secret)
    info, retry = status_details(error)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "TOO_MANY_AUTH_FAILURES"
    assert isinstance(retry, error_details_pb2.RetryInfo) and 0 < retry.retry_delay.seconds <= 60


async def test_a_reload_does_not_forgive_an_address_that_kept_failing(
    tmp_path: Path, start_server: StartServer
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(keyed(tmp_path).replace("mode: keys,", "mode: keys, max_failures_per_minute: 2,"))
    gateway = await start_server(path, ENVIRON)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as data:
        stub = pb_grpc.GatewayStub(data)
        for _ in range(2):
            error = await refused(stub.Chat(chat_request(), metadata=bearer("bad")))
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert gateway.reload("test")
        error = await refused(stub.Chat(chat_request(), metadata=bearer("bad")))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_revocation_reaches_another_gateway_on_the_store_within_a_second(
    tmp_path: Path, start_server: StartServer
) -> None:
    first = await start_server(keyed(tmp_path), ENVIRON)
    second = await start_server(keyed(tmp_path).replace("admin_listen: '127.0.0.1:0'", ""), ENVIRON)
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{first.admin_port}") as admin,
        grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as data,
    ):
        admin_stub, stub = admin_pb2_grpc.AdminStub(admin), pb_grpc.GatewayStub(data)
        made = await admin_stub.CreateKey(admin_pb2.CreateKeyRequest(tenant="beta"), metadata=bearer(ADMIN_KEY))
        # The other gateway reads the new key within its refresh interval (asked of its key ring:
        # calls failing meanwhile would count against this address).
        started = time.monotonic()
        assert second.keys is not None
        while second.keys.get(made.key.id) is None:
            assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.02)
        await stub.Chat(chat_request(), metadata=bearer(made.secret))
        await admin_stub.RevokeKey(admin_pb2.RevokeKeyRequest(id=made.key.id), metadata=bearer(ADMIN_KEY))
        revoked_at = time.monotonic()
        while True:
            try:
                await stub.Chat(chat_request(), metadata=bearer(made.secret))
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                break
            assert time.monotonic() - revoked_at < 1.0, "still served a second after the revocation"
            await asyncio.sleep(0.02)


async def test_a_tenants_rpm_holds(tmp_path: Path, start_keyed: StartKeyed) -> None:
    gateway = await start_keyed(keyed(tmp_path, "\n  acme: {rpm: 2}\n"))
    made = await gateway.create_key("acme")
    for _ in range(2):
        await gateway.chat(made.secret)
    error = await refused(gateway.chat(made.secret))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_low_priority_tenant_leaves_a_deployments_last_requests_to_a_high_one(
    tmp_path: Path, start_keyed: StartKeyed
) -> None:
    yaml = keyed(tmp_path, "\n  vip: {priority: high}\n  batch: {priority: low}\n").replace(
        "region: eu, context_window: 1000}", "region: eu, context_window: 1000, rpm: 10}"
    )
    gateway = await start_keyed(yaml)
    vip, batch = (await gateway.create_key("vip")).secret, (await gateway.create_key("batch")).secret
    served = 0
    while served < 20:
        try:
            await gateway.chat(batch, model="other")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            break
        served += 1
    assert served == 6, "two reserves of a fifth of the 10 left to normal and high callers"
    for _ in range(4):
        await gateway.chat(vip, model="other")
    assert (await refused(gateway.chat(vip, model="other"))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_keys_are_compared_in_constant_time_even_when_the_id_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    hasher = KeyHasher(b"k" * 32)
    key, record = hasher.new_key("acme", "")
    assert hasher.matches(key, record) and not hasher.matches(key + "x", record)
    assert not hasher.matches(key, None), "no record: compared against a dummy hash all the same"
    assert len(compared) == 3 and all(len(a) == len(b) == 64 for a, b in compared)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        KeyHasher(b"short")


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("auth: {mode: mtls}\ntenants: {a: {}}\n", "auth.mode: mtls needs server.tls with a client_ca_file"),
        ("tenants: {a: {model_groups: [nope]}}\n", "tenants.a.model_groups[0]: no model group 'nope'"),
        ("tenants: {a: {regions: [mars]}}\n", "tenants.a.regions[0]: no deployment is in region 'mars'"),
        (
            "server: {admin_listen: '127.0.0.1:0'}\nauth: {mode: keys}\ntenants: {a: {}}\n",
            "auth.admin_key_env: required with server.admin_listen",
        ),
        ("auth: {mode: keys}\n", "tenants: auth.mode keys needs at least one tenant"),
        (
            "tenants: {a: {rpm: 5}}\nrate_limits: {tenants: {a: {rpm: 6}}}\n",
            "tenants.a: its rpm/tpm is also given in rate_limits.tenants.a",
        ),
        (
            "tenants: {a: {priority: low}}\nrate_limits: {tenant_priorities: {a: high}}\n",
            "tenants.a: its priority is also given in rate_limits.tenant_priorities.a",
        ),
        ("tenants: {a: {priority: urgent}}\n", "tenants.a.priority"),
    ],
)
def test_tenants_and_auth_modes_are_checked_with_the_config(yaml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(yaml + DEPLOYMENTS)
    assert expected in str(raised.value)


async def test_a_missing_server_secret_stops_the_gateway_with_its_name(tmp_path: Path) -> None:
    config = parse_config(keyed(tmp_path))
    with pytest.raises(ConfigError, match="SWITCHBOARD_AUTH_SECRET must hold the server secret"):
        Gateway(config, "127.0.0.1:0", {"SWITCHBOARD_ADMIN_KEY": ADMIN_KEY})


async def test_the_keys_command_makes_lists_and_revokes_keys(keyed_gateway: Keyed) -> None:
    admin = f"127.0.0.1:{keyed_gateway.gateway.admin_port}"

    async def keys(*arguments: str, credential: str | None = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "SWITCHBOARD_ADMIN_KEY"}
        if credential is not None:
            env["SWITCHBOARD_ADMIN_KEY"] = credential
        command = [sys.executable, "-m", "service", "keys", *arguments, "--admin", admin]
        # In a thread: the gateway that answers runs on this loop.
        return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, env=env)

    made = await keys("create", "--tenant", "acme", "--name", "cli", "--expires-in", "30d")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["secret"].startswith("sb-") and "shown only now" in made.stderr
    assert (await keyed_gateway.chat(created["secret"])).served.deployment == "eu-echo"
    listed = json.loads((await keys("list", "--tenant", "acme")).stdout)
    assert [k["id"] for k in listed["keys"]] == [created["key"]["id"]]
    assert "secret" not in json.dumps(listed) and created["secret"] not in json.dumps(listed)
    revoked = await keys("revoke", created["key"]["id"])
    assert json.loads(revoked.stdout)["key"]["state"] == "revoked"
    unauthorised = await keys("list", credential=None)
    assert unauthorised.returncode == 1 and "UNAUTHENTICATED" in unauthorised.stderr


async def test_a_policy_cannot_carry_a_tenant_beyond_its_groups(tmp_path: Path, start_keyed: StartKeyed) -> None:
    """A policy that routes to the tenant's group and, first, to a deployment of another: that
    one is never tried for the tenant (before, the group check passed and it served the call)."""
    policy = """
policies:
  - id: mixed
    when: {field: metadata.mix, eq: "yes"}
    strategy: priority
    route_to: {groups: [chat], deployments: [other-echo]}
"""
    yaml = keyed(tmp_path).replace(
        "{id: other-echo, type: echo, model: other, region: eu,",
        "{id: other-echo, type: echo, model: other, region: eu, priority: 0,",
    )
    for chat in ("model: echo-eu, region: eu,", "model: echo-us, region: us,"):
        yaml = yaml.replace(chat, chat + " priority: 5,")
    gateway = await start_keyed(yaml + policy)
    acme, beta = (await gateway.create_key("acme")).secret, (await gateway.create_key("beta")).secret
    request = chat_request(model="chat")
    request.metadata["mix"] = "yes"
    served_beta = await gateway.stub.Chat(request, metadata=bearer(beta))
    assert served_beta.served.deployment == "other-echo", "the policy's first choice, for a tenant that may"
    served_acme = await gateway.stub.Chat(request, metadata=bearer(acme))
    assert served_acme.served.deployment == "eu-echo"
    assert [a.deployment for a in served_acme.attempts] == ["eu-echo"], "the other group's is not even listed"
    route = pb.RouteRequest(model="chat", metadata={"mix": "yes"})
    explained = await gateway.stub.Route(route, metadata=bearer(acme))
    named = [c.deployment for c in explained.candidates] + [r.deployment for r in explained.rejected]
    assert "other-echo" not in named and "eu-echo" in named, "Route explains only what it may use"
    request.routing.required_capabilities.append("vision")  # that none of them has
    error = await refused(gateway.stub.Chat(request, metadata=bearer(acme)))
    told = str(status_details(error)) + (error.details() or "")
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "eu-echo" in told
    assert "other-echo" not in told, "nor does an error"


async def test_a_tenant_sees_only_the_groups_it_may_use(keyed_gateway: Keyed) -> None:
    acme, beta = (await keyed_gateway.create_key("acme")).secret, (await keyed_gateway.create_key("beta")).secret
    listed = await keyed_gateway.stub.ListModels(pb.ListModelsRequest(), metadata=bearer(acme))
    assert [group.name for group in listed.model_groups] == ["chat"]
    everything = await keyed_gateway.stub.ListModels(pb.ListModelsRequest(), metadata=bearer(beta))
    assert [group.name for group in everything.model_groups] == ["chat", "other"]
    error = await refused(keyed_gateway.chat(acme, model="nope"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "known groups: chat" in (error.details() or "") and "other" not in (error.details() or "")

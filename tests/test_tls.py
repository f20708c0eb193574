"""TLS and mutual TLS on the gRPC port, with certificates made for the test (trustme): real
handshakes over loopback, a certificate swapped by a reload, bad files refused with the key that
names them, and a warning for a plaintext port reachable from elsewhere."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
import trustme

from service import tls
from service.api.switchboard.v1 import gateway_pb2_grpc as pb_grpc
from service.cli import main
from service.config import ConfigError
from service.config.schema import TlsSettings
from service.tls import TlsFiles, warn_if_exposed
from tests.conftest import StartServer
from tests.test_e2e import chat_request
from tests.test_workers import ECHO_ONLY


def write_server_cert(ca: trustme.CA, directory: Path) -> None:
    issued = ca.issue_cert("127.0.0.1", "localhost")
    (directory / "server.pem").write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(directory / "server.key"))


def tls_yaml(mutual: bool = False) -> str:
    client_ca = ", client_ca_file: clients.pem" if mutual else ""
    return f"server: {{tls: {{cert_file: server.pem, key_file: server.key{client_ca}}}}}\n"


def credentials(ca: trustme.CA, client: trustme.LeafCert | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    chain = b"".join(blob.bytes() for blob in client.cert_chain_pems)
    return grpc.ssl_channel_credentials(ca.cert_pem.bytes(), client.private_key_pem.bytes(), chain)


async def chat(port: int, channel_credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    target = f"127.0.0.1:{port}"
    if channel_credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, channel_credentials)
    async with channel:
        try:
            await pb_grpc.GatewayStub(channel).Chat(chat_request(model="echo"), timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


async def test_tls_serves_clients_that_trust_its_ca_and_refuses_plaintext(
    tmp_path: Path, start_server: StartServer
) -> None:
    ca = trustme.CA()
    write_server_cert(ca, tmp_path)
    (tmp_path / "c.yaml").write_text(tls_yaml() + ECHO_ONLY)
    gateway = await start_server(tmp_path / "c.yaml")
    assert await chat(gateway.port, credentials(ca)) == grpc.StatusCode.OK
    assert await chat(gateway.port, None) == grpc.StatusCode.UNAVAILABLE, "plaintext gets no answer"
    assert await chat(gateway.port, credentials(trustme.CA())) == grpc.StatusCode.UNAVAILABLE, "another CA"


async def test_mutual_tls_wants_a_client_certificate_from_its_ca(tmp_path: Path, start_server: StartServer) -> None:
    ca, clients, strangers = trustme.CA(), trustme.CA(), trustme.CA()
    write_server_cert(ca, tmp_path)
    clients.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    (tmp_path / "c.yaml").write_text(tls_yaml(mutual=True) + ECHO_ONLY)
    gateway = await start_server(tmp_path / "c.yaml")
    assert await chat(gateway.port, credentials(ca, clients.issue_cert("team-a"))) == grpc.StatusCode.OK
    assert await chat(gateway.port, credentials(ca)) == grpc.StatusCode.UNAVAILABLE, "no client certificate"
    refused = await chat(gateway.port, credentials(ca, strangers.issue_cert("team-a")))
    assert refused == grpc.StatusCode.UNAVAILABLE, "a certificate from another CA"


async def test_a_reload_swaps_the_certificate_for_new_connections(tmp_path: Path, start_server: StartServer) -> None:
    old, new = trustme.CA(), trustme.CA()
    write_server_cert(old, tmp_path)
    (tmp_path / "c.yaml").write_text(tls_yaml() + ECHO_ONLY)
    gateway = await start_server(tmp_path / "c.yaml")
    assert await chat(gateway.port, credentials(old)) == grpc.StatusCode.OK
    write_server_cert(new, tmp_path)
    assert gateway.reloaded("test").applied
    assert await chat(gateway.port, credentials(new)) == grpc.StatusCode.OK
    assert await chat(gateway.port, credentials(old)) == grpc.StatusCode.UNAVAILABLE, "the old one is gone"

    (tmp_path / "server.key").write_bytes(b"not a key")
    refused = gateway.reloaded("test")
    assert not refused.applied and "server.tls: cannot use cert_file" in refused.error
    assert await chat(gateway.port, credentials(new)) == grpc.StatusCode.OK, "still the last good one"


def test_bad_tls_files_stop_serve_with_the_key_that_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.yaml").write_text(tls_yaml() + ECHO_ONLY)
    assert main(["serve", "--config", str(tmp_path / "c.yaml"), "--listen", "127.0.0.1:0"]) == 2
    error = capsys.readouterr().err
    assert "server.tls: cannot use cert_file" in error and "server.pem" in error
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "server.pem"))  # a certificate without its key
    (tmp_path / "server.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="key_file"):
        TlsFiles.read(TlsSettings(cert_file=Path("server.pem"), key_file=Path("server.key")), tmp_path)


def test_a_plaintext_port_beyond_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "service.tls")
    for quiet in ("127.0.0.1:50051", "[::1]:50051", "localhost:50051"):
        warn_if_exposed(quiet, None)
    assert not caplog.records
    warn_if_exposed("0.0.0.0:50051", None)
    (record,) = caplog.records
    assert "without TLS" in record.getMessage() and "0.0.0.0:50051" in record.getMessage()


async def test_with_auth_mtls_the_certificates_common_name_names_the_tenant(
    tmp_path: Path, start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "switchboard.access")
    ca, clients = trustme.CA(), trustme.CA()
    write_server_cert(ca, tmp_path)
    clients.cert_pem.write_to_path(str(tmp_path / "clients.pem"))
    auth = "auth: {mode: mtls}\ntenants: {team-a: {}}\n"
    (tmp_path / "c.yaml").write_text(tls_yaml(mutual=True) + auth + ECHO_ONLY)
    gateway = await start_server(tmp_path / "c.yaml")
    team_a = clients.issue_cert("team-a", common_name="team-a")
    assert await chat(gateway.port, credentials(ca, team_a)) == grpc.StatusCode.OK
    (line,) = [r.access for r in caplog.records if r.name == "switchboard.access"]  # type: ignore[attr-defined]
    assert line["tenant"] == "team-a"
    stranger = clients.issue_cert("stranger", common_name="stranger")
    assert await chat(gateway.port, credentials(ca, stranger)) == grpc.StatusCode.PERMISSION_DENIED


def test_an_encrypted_key_is_refused_not_prompted_for(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    write_server_cert(ca, tmp_path)
    key = serialization.load_pem_private_key((tmp_path / "server.key").read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "server.key").write_bytes(encrypted)
    with pytest.raises(ConfigError, match="encrypted"):
        TlsFiles.read(TlsSettings(cert_file=Path("server.pem"), key_file=Path("server.key")), tmp_path)


def test_files_rotated_while_they_are_checked_are_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rotation writing the new certificate and key while the old ones are checked: what is
    kept is a pair that was checked, the new one, never the old certificate with the new key."""
    write_server_cert(trustme.CA(), tmp_path)
    newer = tmp_path / "newer"
    newer.mkdir()
    write_server_cert(trustme.CA(), newer)
    checked = tls._check

    def rotating(cert: Path, key: Path, ca: Path | None) -> None:
        checked(cert, key, ca)
        if (tmp_path / "server.pem").read_bytes() != (newer / "server.pem").read_bytes():
            (tmp_path / "server.pem").write_bytes((newer / "server.pem").read_bytes())
            (tmp_path / "server.key").write_bytes((newer / "server.key").read_bytes())

    monkeypatch.setattr(tls, "_check", rotating)
    files = TlsFiles.read(TlsSettings(cert_file=Path("server.pem"), key_file=Path("server.key")), tmp_path)
    assert (files.cert_chain, files.key) == ((newer / "server.pem").read_bytes(), (newer / "server.key").read_bytes())

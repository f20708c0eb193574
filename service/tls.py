"""TLS on the gRPC port (`server.tls`): the certificate files read and checked (the key matches
the chain, the CA file holds certificates) when the gateway starts and again at every reload, and
served through gRPC's dynamic credentials, so a reload's new certificate is used for the next
handshakes without a restart. Connections already open keep theirs.

Whether clients must present a certificate (`client_ca_file`) is fixed when the server starts:
turning TLS or mutual TLS on or off takes a restart."""

from __future__ import annotations

import ipaddress
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

from service.config import ConfigError
from service.config.schema import TlsSettings

log = logging.getLogger(__name__)

# How often the files are read again when they change while they are checked.
READ_TRIES = 3


@dataclass(frozen=True)
class TlsFiles:
    """The PEM bytes of a server's chain and key, and of the clients' CA if any."""

    cert_chain: bytes
    key: bytes
    client_ca: bytes | None

    @classmethod
    def read(cls, settings: TlsSettings, config_dir: Path | None) -> TlsFiles:
        """Reads and checks the files; ConfigError naming the key and the file otherwise. The
        bytes kept are those checked: files read again after the check must not have changed
        (a rotation that writes the certificate and the key one after the other), else it all
        starts again, a few times at most."""
        cert, key = _path(settings.cert_file, config_dir), _path(settings.key_file, config_dir)
        ca = None if settings.client_ca_file is None else _path(settings.client_ca_file, config_dir)
        for _ in range(READ_TRIES):
            before = _contents(cert, key, ca)
            _check(cert, key, ca)
            after = _contents(cert, key, ca)
            if before == after:
                return cls(*after)
        raise ConfigError(f"server.tls: {cert} and {key} kept changing while they were read; try again")

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert_chain)], self.client_ca)


class ServerTls:
    """The port's credentials, and the certificate a reload hands them for the next handshakes."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.mutual = files.client_ca is not None
        self._lock = threading.Lock()
        self._pending: TlsFiles | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self.files.configuration(), self._fetch, require_client_authentication=self.mutual
        )

    def update(self, files: TlsFiles) -> None:
        """Serves `files` from the next handshake on, if they differ."""
        if files == self.files:
            return
        with self._lock:
            self.files = self._pending = files
        log.info("TLS certificate reloaded: new connections get the new one")

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC's core (any thread) before each handshake: None keeps the current one.
        with self._lock:
            pending, self._pending = self._pending, None
        return None if pending is None else pending.configuration()


def warn_if_exposed(listen: str, tls: TlsSettings | None, what: str = "the gateway") -> None:
    """A clear warning when a plaintext port is reachable beyond this machine."""
    host = listen.rpartition(":")[0].strip("[]")
    if tls is None and not _loopback(host):
        log.warning(
            "%s listens on %s without TLS: whoever reaches the port or the network between can read "
            "the calls and what they carry; use TLS, or a loopback address",
            what,
            listen,
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name, or 0.0.0.0 / [::]: reachable from elsewhere


def _contents(cert: Path, key: Path, ca: Path | None) -> tuple[bytes, bytes, bytes | None]:
    def read(name: str, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as error:
            raise ConfigError(f"server.tls: cannot use {name} {path}: {_why(error)}") from error

    return read("cert_file", cert), read("key_file", key), None if ca is None else read("client_ca_file", ca)


def _check(cert: Path, key: Path, ca: Path | None) -> None:
    try:
        # No password: an encrypted key is refused, never prompted for on a terminal.
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=_no_password)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"server.tls: cannot use cert_file {cert} with key_file {key}: {_why(error)}") from error
    if ca is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"server.tls: cannot use client_ca_file {ca}: {_why(error)}") from error


def _no_password() -> bytes:
    raise ssl.SSLError("the key is encrypted; give an unencrypted key file")


def _path(path: Path, config_dir: Path | None) -> Path:
    return path if path.is_absolute() or config_dir is None else config_dir / path


def _why(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return getattr(error, "reason", None) or str(error)
    return error.strerror or str(error)

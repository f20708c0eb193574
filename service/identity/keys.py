"""API keys: `sb-<id>-<secret>`, where the id (12 hex digits) names the key in logs, lists and
errors, and the secret (32 random bytes) is shown once, when the key is made. The store keeps an
HMAC-SHA256 of the whole key under the server's secret (`auth.secret_env`), never the key: a
stolen store reveals no key, and a key cannot be checked without the server's secret.

A presented key is checked in constant time against the hash of its id's record; an unknown id
is checked against a dummy hash, so the time taken does not tell whether an id exists."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "sb"
_KEY = re.compile(r"^sb-([0-9a-f]{12})-([A-Za-z0-9_-]{43})$")
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as the store keeps it."""

    id: str
    tenant: str
    name: str
    key_hash: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    # Its own budget in USD, beside its tenant's: per day, per month, in all (None: unbounded).
    daily_usd: float | None = None
    monthly_usd: float | None = None
    total_usd: float | None = None

    def state(self, now: float) -> str:
        """active, revoked or expired."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


class KeyHasher:
    """Keyed hashes of keys under the server's secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the server secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret
        self._dummy = self.hash(f"{PREFIX}-000000000000-{'A' * 43}")

    def hash(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()

    def new_key(
        self,
        tenant: str,
        name: str,
        expires_at: float | None = None,
        budget: tuple[float | None, float | None, float | None] = (None, None, None),
    ) -> tuple[str, KeyRecord]:
        """A fresh key (shown once) and its record."""
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}-{key_id}-{secrets.token_urlsafe(32)}"
        return key, KeyRecord(key_id, tenant, name, self.hash(key), time.time(), expires_at, None, *budget)

    def matches(self, key: str, record: KeyRecord | None) -> bool:
        """Whether `key` is `record`'s, in time independent of where they differ (or of whether
        there is a record)."""
        expected = self._dummy if record is None else record.key_hash
        return hmac.compare_digest(self.hash(key), expected) and record is not None


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header (its first 256 characters), if any."""
    for name, value in metadata or ():
        if name == "authorization" and isinstance(value, str):
            scheme, _, token = value[:256].partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def key_id(presented: str) -> str | None:
    """The id of a well-formed key; None for anything else."""
    match = _KEY.match(presented)
    return match.group(1) if match else None

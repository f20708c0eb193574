"""Clients as gRPC names them (`ipv4:10.0.0.5:5123`), by address: the unit per-client limits count."""

from __future__ import annotations


def peer_address(peer: str) -> str:
    """`ipv4:10.0.0.5:5123` → `ipv4:10.0.0.5`; `ipv6:[::1]:5123` → `ipv6:[::1]`; else as given."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and ":" in host else peer

"""The contract and the code agree: every ErrorInfo reason the gateway sends is a value of the
proto's ErrorReason, and every value is one it sends; the committed image of the released
contract is what `buf breaking` holds the protos to."""

from __future__ import annotations

import subprocess
from pathlib import Path

import service.identity.errors
import service.validation  # noqa: F401
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.errors import GatewayError, InvalidRequest

PROTOS = Path(__file__).parent.parent / "protos"
BUF = Path(__file__).parent.parent / ".cache" / "bin" / "buf"


def subclasses(base: type[GatewayError]) -> set[type[GatewayError]]:
    found = set(base.__subclasses__())
    return found.union(*(subclasses(child) for child in found))


def test_every_reason_the_gateway_sends_is_in_the_contract_and_every_value_is_sent() -> None:
    errors = subclasses(GatewayError)
    unnamed = {error for error in errors if not error.reason}
    assert all(issubclass(error, InvalidRequest) for error in unnamed), "INVALID_ARGUMENT carries a BadRequest"
    sent = {f"ERROR_REASON_{error.reason}" for error in errors if error.reason}
    declared = set(pb.ErrorReason.keys()) - {"ERROR_REASON_UNSPECIFIED"}
    assert sent == declared


def test_the_contract_breaks_nothing_released() -> None:
    """What CI runs: the protos against the committed image of the last released contract."""
    done = subprocess.run(
        [str(BUF), "breaking", "--against", "released.binpb"], cwd=PROTOS, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr

"""Checks a request before it is routed; every problem names its field."""

from __future__ import annotations

import math
from collections.abc import Sequence

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.errors import InvalidRequest

MAX_STOP_SEQUENCES = 4
Violations = list[tuple[str, str]]


def validate_chat(request: pb.ChatRequest) -> None:
    violations: Violations = []
    if not request.model:
        violations.append(("model", 'required: a model group name, or "auto"'))
    if not request.messages:
        violations.append(("messages", "at least one message is required"))
    violations += _messages(request.messages)
    violations += _params(request.params)
    violations += _routing(request.routing)
    if violations:
        raise InvalidRequest(violations)


def validate_route(request: pb.RouteRequest) -> None:
    violations: Violations = []
    if not request.model:
        violations.append(("model", 'required: a model group name, or "auto"'))
    violations += _messages(request.messages)
    violations += _routing(request.routing)
    if violations:
        raise InvalidRequest(violations)


def _routing(routing: pb.RoutingHints) -> Violations:
    violations: Violations = []
    if routing.HasField("max_cost_usd") and not (0.0 <= routing.max_cost_usd < math.inf):
        violations.append(("routing.max_cost_usd", f"must be a finite number >= 0, got {routing.max_cost_usd}"))
    if routing.HasField("latency_target_ms") and not (0.0 < routing.latency_target_ms < math.inf):
        violations.append(("routing.latency_target_ms", f"must be positive, got {routing.latency_target_ms}"))
    return violations


_KNOWN_ROLES = frozenset(pb.Role.values()) - {pb.ROLE_UNSPECIFIED}


def _messages(messages: Sequence[pb.Message]) -> Violations:
    violations: Violations = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role not in _KNOWN_ROLES:
            violations.append((f"{where}.role", "required: ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT"))
        elif message.role == pb.ROLE_TOOL:
            violations.append((f"{where}.role", "ROLE_TOOL is reserved for tool support, not available yet"))
        if not message.content:
            violations.append((f"{where}.content", "at least one content part is required"))
        for j, part in enumerate(message.content):
            violations += _content_part(part, f"{where}.content[{j}]")
    return violations


def _content_part(part: pb.ContentPart, where: str) -> Violations:
    kind = part.WhichOneof("part")
    if kind is None:
        return [(where, "set one of text or image")]
    if kind == "image":
        source = part.image.WhichOneof("source")
        if source is None:
            return [(f"{where}.image", "set one of url or data")]
        if source == "data" and not part.image.mime_type.startswith("image/"):
            return [(f"{where}.image.mime_type", 'required with data, such as "image/png"')]
    return []


def _params(params: pb.GenerationParams) -> Violations:
    violations: Violations = []
    if params.HasField("temperature") and not 0.0 <= params.temperature <= 2.0:
        violations.append(("params.temperature", f"must be between 0 and 2, got {params.temperature}"))
    if params.HasField("top_p") and not 0.0 < params.top_p <= 1.0:
        violations.append(("params.top_p", f"must be greater than 0 and at most 1, got {params.top_p}"))
    if params.HasField("max_tokens") and params.max_tokens <= 0:
        violations.append(("params.max_tokens", f"must be positive, got {params.max_tokens}"))
    for name in ("presence_penalty", "frequency_penalty"):
        if params.HasField(name) and not -2.0 <= getattr(params, name) <= 2.0:
            violations.append((f"params.{name}", f"must be between -2 and 2, got {getattr(params, name)}"))
    if len(params.stop) > MAX_STOP_SEQUENCES:
        violations.append(("params.stop", f"at most {MAX_STOP_SEQUENCES} sequences, got {len(params.stop)}"))
    if any(not stop for stop in params.stop):
        violations.append(("params.stop", "stop sequences must not be empty"))
    return violations

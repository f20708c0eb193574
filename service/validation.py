"""Checks a request before it is routed: its size against the limits first, then its content;
every problem names its field."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence

from google.protobuf import struct_pb2
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import RequestLimits
from service.errors import InvalidRequest

MAX_STOP_SEQUENCES = 4
# The function names every provider accepts (OpenAI's rule; Anthropic's and Gemini's are looser).
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
Violations = list[tuple[str, str]]


def validate_chat(request: pb.ChatRequest, limits: RequestLimits) -> None:
    _check_limits(request, limits)
    violations: Violations = []
    if not request.model:
        violations.append(("model", 'required: a model group name, or "auto"'))
    if not request.messages:
        violations.append(("messages", "at least one message is required"))
    violations += _messages(request.messages)
    violations += _params(request.params)
    violations += _routing(request.routing)
    violations += _tools(request.tools, request.tool_choice if request.HasField("tool_choice") else None)
    violations += _response_format(request.response_format)
    if violations:
        raise InvalidRequest(violations)


def validate_route(request: pb.RouteRequest, limits: RequestLimits) -> None:
    _check_limits(request, limits)
    violations: Violations = []
    if not request.model:
        violations.append(("model", 'required: a model group name, or "auto"'))
    violations += _messages(request.messages)
    violations += _routing(request.routing)
    violations += _tools(request.tools, None)
    violations += _response_format(request.response_format)
    if violations:
        raise InvalidRequest(violations)


# What a report on a call may hold (`validate_feedback`).
_CALL_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_LABEL = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_FEEDBACK_COMMENT_CHARS = 2000
MAX_FEEDBACK_SCORE = 1e9


def validate_feedback(request: pb.FeedbackRequest) -> None:
    """A report names a call as its ids are made and says something of it, each part bounded."""
    violations: Violations = []
    if not _CALL_ID.fullmatch(request.request_id):
        violations.append(("request_id", "required: the call's id, 1 to 128 of A-Z a-z 0-9 . _ : -"))
    has_score = request.HasField("score")
    if has_score and not (math.isfinite(request.score) and abs(request.score) <= MAX_FEEDBACK_SCORE):
        violations.append(("score", "a finite number, at most 1e9 in size"))
    if request.label and not _LABEL.fullmatch(request.label):
        violations.append(("label", "at most 64 of A-Z a-z 0-9 . _ : -"))
    if len(request.comment) > MAX_FEEDBACK_COMMENT_CHARS:
        violations.append(("comment", f"at most {MAX_FEEDBACK_COMMENT_CHARS} characters"))
    if not (has_score or request.label or request.comment):
        violations.append(("score", "give a score, a label or a comment"))
    if violations:
        raise InvalidRequest(violations)


def _check_limits(request: pb.ChatRequest | pb.RouteRequest, limits: RequestLimits) -> None:
    """Raises InvalidRequest when the request holds more than the limits allow. Runs before
    anything else, in time bounded by the limits themselves, so that a request of a hundred
    thousand messages costs no more than one of a thousand."""
    violations: Violations = []
    counts = [
        ("messages", len(request.messages), limits.max_messages),
        ("tools", len(request.tools), limits.max_tools),
        ("metadata", len(request.metadata), limits.max_metadata_entries),
        ("routing.tags", len(request.routing.tags), limits.max_list_entries),
        ("routing.required_capabilities", len(request.routing.required_capabilities), limits.max_list_entries),
        ("routing.allowed_regions", len(request.routing.allowed_regions), limits.max_list_entries),
    ]
    violations += [(field, f"at most {limit}, got {count}") for field, count, limit in counts if count > limit]
    if violations:
        raise OverLimits(violations)  # nothing below is bounded until these are
    text_bytes = 0
    for i, message in enumerate(request.messages):
        if len(message.content) > limits.max_parts_per_message:
            violations.append(
                (f"messages[{i}].content", f"at most {limits.max_parts_per_message} parts, got {len(message.content)}")
            )
        text_bytes += sum(len(part.text) for part in message.content)
        text_bytes += sum(len(call.arguments) for call in message.tool_calls)
    text_bytes += sum(len(tool.description) for tool in request.tools)
    if text_bytes > limits.max_text_bytes:
        violations.append(("messages", f"at most {limits.max_text_bytes} bytes of text, got {text_bytes}"))
    schemas = [(f"tools[{i}].parameters", tool.parameters) for i, tool in enumerate(request.tools)]
    if request.HasField("response_format") and request.response_format.HasField("schema"):
        schemas.append(("response_format.schema", request.response_format.schema))
    for field, schema in schemas:
        problem = _schema_too_large(schema, limits)
        if problem:
            violations.append((field, problem))
    if violations:
        raise OverLimits(violations)


class OverLimits(InvalidRequest):
    """The request holds more than the limits allow: nothing else about it is looked at."""


def _schema_too_large(schema: struct_pb2.Struct, limits: RequestLimits) -> str | None:
    """Why a JSON Schema is too deep or too large, walking it without recursion and no further
    than the limits."""
    pending: list[tuple[struct_pb2.Value | struct_pb2.Struct, int]] = [(schema, 1)]
    values = 0
    while pending:
        node, depth = pending.pop()
        values += 1
        if depth > limits.max_schema_depth:
            return f"nested more than {limits.max_schema_depth} deep"
        if values > limits.max_schema_values:
            return f"more than {limits.max_schema_values} values"
        if isinstance(node, struct_pb2.Struct):
            pending += [(value, depth + 1) for value in node.fields.values()]
        elif node.HasField("struct_value"):
            pending.append((node.struct_value, depth))
        elif node.HasField("list_value"):
            pending += [(value, depth + 1) for value in node.list_value.values]
    return None


def _routing(routing: pb.RoutingHints) -> Violations:
    violations: Violations = _known_enum("routing.preference", routing.preference, pb.Preference)
    if routing.HasField("max_cost_usd") and not (0.0 <= routing.max_cost_usd < math.inf):
        violations.append(("routing.max_cost_usd", f"must be a finite number >= 0, got {routing.max_cost_usd}"))
    if routing.HasField("latency_target_ms") and not (0.0 < routing.latency_target_ms < math.inf):
        violations.append(("routing.latency_target_ms", f"must be positive, got {routing.latency_target_ms}"))
    return violations


_KNOWN_ROLES = frozenset(pb.Role.values()) - {pb.ROLE_UNSPECIFIED}
# Data URLs of images: base64 only, the form every provider takes.
_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,([A-Za-z0-9+/]*={0,2})", re.ASCII)


def _known_enum(field: str, value: int, enum: EnumTypeWrapper) -> Violations:
    """A number proto3 decodes into an enum field but the enum does not name (a newer client's
    value, or garbage) would otherwise be acted on as if it meant something."""
    if value in _enum_values(enum):
        return []
    return [(field, f"unknown value {value}; known: {', '.join(enum.keys())}")]


@functools.cache
def _enum_values(enum: EnumTypeWrapper) -> frozenset[int]:
    # `values()` makes a new list on each call; a request checks several enums.
    return frozenset(enum.values())


def _messages(messages: Sequence[pb.Message]) -> Violations:
    violations: Violations = []
    unanswered: dict[str, str] = {}  # tool call id -> where it was made
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role not in _KNOWN_ROLES:
            violations.append((f"{where}.role", "required: ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"))
        if message.role != pb.ROLE_TOOL and unanswered:
            # Every provider wants a call's result in the turn right after the call.
            ids = ", ".join(sorted(unanswered))
            violations.append((where, f"tool calls {ids} must be answered by ROLE_TOOL messages before this one"))
            unanswered.clear()
        if message.tool_calls and message.role != pb.ROLE_ASSISTANT:
            violations.append((f"{where}.tool_calls", "only assistant messages carry tool calls"))
        if message.tool_call_id and message.role != pb.ROLE_TOOL:
            violations.append((f"{where}.tool_call_id", "only ROLE_TOOL messages answer a tool call"))
        if message.role == pb.ROLE_TOOL:
            if not message.tool_call_id:
                violations.append((f"{where}.tool_call_id", "required: the id of the tool call this answers"))
            elif unanswered.pop(message.tool_call_id, None) is None:
                violations.append(
                    (f"{where}.tool_call_id", f"{message.tool_call_id!r} answers no open call of the previous turn")
                )
        for j, call in enumerate(message.tool_calls):
            violations += _tool_call(call, f"{where}.tool_calls[{j}]")
            unanswered[call.id] = f"{where}.tool_calls[{j}]"
        if not message.content and not message.tool_calls:
            violations.append((f"{where}.content", "at least one content part is required"))
        for j, part in enumerate(message.content):
            violations += _content_part(part, f"{where}.content[{j}]")
            if message.role == pb.ROLE_TOOL and part.WhichOneof("part") != "text":
                violations.append((f"{where}.content[{j}]", "a tool result is text"))
    if unanswered:
        ids = ", ".join(sorted(unanswered))
        violations.append(("messages", f"tool calls {ids} are not answered by ROLE_TOOL messages"))
    return violations


def _tool_call(call: pb.ToolCall, where: str) -> Violations:
    violations: Violations = []
    if not call.id:
        violations.append((f"{where}.id", "required"))
    if not TOOL_NAME.fullmatch(call.name):
        violations.append((f"{where}.name", "required: letters, digits, '_' and '-', 1 to 64 characters"))
    if not _is_json_object(call.arguments or "{}"):
        violations.append((f"{where}.arguments", "must be a JSON object"))
    return violations


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        return False


def _tools(tools: Sequence[pb.Tool], choice: pb.ToolChoice | None) -> Violations:
    violations: Violations = []
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not TOOL_NAME.fullmatch(tool.name):
            violations.append((f"tools[{i}].name", "required: letters, digits, '_' and '-', 1 to 64 characters"))
        elif tool.name in names:
            violations.append((f"tools[{i}].name", f"{tool.name!r} is declared twice"))
        names.add(tool.name)
        schema_type = tool.parameters.fields.get("type")
        if tool.parameters.fields and (schema_type is None or schema_type.string_value != "object"):
            violations.append((f"tools[{i}].parameters", 'must be a JSON Schema with "type": "object"'))
    if choice is not None:
        kind = choice.WhichOneof("choice")
        if kind == "mode":
            violations += _known_enum("tool_choice.mode", choice.mode, pb.ToolChoiceMode)
        if kind == "tool_name" and choice.tool_name not in names:
            violations.append(("tool_choice.tool_name", f"{choice.tool_name!r} is not one of the request's tools"))
        if kind == "mode" and choice.mode == pb.TOOL_CHOICE_MODE_REQUIRED and not tools:
            violations.append(("tool_choice.mode", "TOOL_CHOICE_MODE_REQUIRED needs tools"))
    return violations


def _response_format(response_format: pb.ResponseFormat) -> Violations:
    violations: Violations = _known_enum("response_format.type", response_format.type, pb.ResponseFormatType)
    if response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        if not TOOL_NAME.fullmatch(response_format.name):
            violations.append(("response_format.name", "required: letters, digits, '_' and '-', 1 to 64 characters"))
        if not response_format.schema.fields:
            violations.append(("response_format.schema", "required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA"))
    elif response_format.schema.fields or response_format.name:
        violations.append(("response_format.schema", "only with RESPONSE_FORMAT_TYPE_JSON_SCHEMA"))
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
        if source == "url":
            return _image_url(part.image.url, f"{where}.image.url")
    return []


def _image_url(url: str, where: str) -> Violations:
    """http(s) URLs the provider fetches, or base64 data: URLs of an image type, as the API says;
    no file:, javascript: or other scheme reaches a provider."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        host = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
        return [] if host else [(where, "an http(s) URL needs a host")]
    if scheme == "data":
        data = _DATA_URL.fullmatch(url)
        if data is None or len(data.group(2)) % 4:
            return [(where, 'a data: URL must be "data:image/<type>;base64,<base64 data>"')]
        return []
    return [(where, "must be an http, https or data: URL")]


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

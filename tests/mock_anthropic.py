"""A local server speaking Anthropic's Messages API (`POST /v1/messages`), for tests.

It checks requests the way the real API does and answers with its error body
(`{"type": "error", "error": {"type", "message"}, "request_id"}`, plus a `request-id`
header on every response): a missing or wrong `x-api-key` is a 401, a missing
`anthropic-version` header a 400, and so are unknown top-level fields, missing
`model`/`max_tokens`/`messages`, out-of-range sampling parameters, blank stop
sequences, a "system" role in `messages`, malformed content blocks, `tool_use`
blocks left without `tool_result` blocks right after them (or results answering no
call, or results after other content), malformed tools and `tool_choice` without
tools or naming an undeclared tool. The messages copy the API's own wording where it
is known (pydantic-style "<path>: <problem>" for shapes).

Answers are deterministic:

- text "<reply_prefix><last user text>" (stop_reason "end_turn"), cut before the first
  stop sequence it contains ("stop_sequence"), or to `max_tokens` words ("max_tokens");
- a `tool_use` block calling the forced (else the first) tool with input
  `{"text": <last user text>}` (stop_reason "tool_use") when tools are given,
  tool_choice is not "none" and the last message is the user's without tool results;
- "<reply_prefix>tool said: <text of the first tool_result>" after tool results.

Usage counts are `len(json.dumps(messages)) // 4` input tokens, one output token per
word (or tool input fragment), and `cached_tokens` as cache reads.

Streams are named server-sent events as the API sends them: message_start, then per
content block content_block_start, content_block_delta..., content_block_stop (a ping
follows the first content_block_start), then message_delta and message_stop. Text
streams a word per delta; tool input streams as `input_json_delta` fragments of 8
characters of `json.dumps(input)` (after an empty one, as the API sends, when
`leading_empty_json_delta` is set). A `fault` makes it misbehave as real upstreams do.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.loopback import LoopbackServer

KNOWN_PARAMETERS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_k",
    "top_p",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    # Accepted by the API (anthropic-sdk-python MessageCreateParams) but ignored here.
    "cache_control",
    "container",
    "inference_geo",
    "output_config",
}
ROLES = ("user", "assistant")
# platform.claude.com "Define tools": ^[a-zA-Z0-9_-]{1,128}$ (older pages said 64).
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
TOOL_FIELDS = {
    "name",
    "description",
    "input_schema",
    "type",
    "cache_control",
    "strict",
    "input_examples",
    "defer_loading",
    "allowed_callers",
}
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
BLOCK_FIELDS = {
    "text": {"type", "text", "cache_control", "citations"},
    "image": {"type", "source", "cache_control"},
    "tool_use": {"type", "id", "name", "input", "cache_control"},
    "tool_result": {"type", "tool_use_id", "content", "is_error", "cache_control"},
}
TOOL_CHOICE_FIELDS = {
    "auto": {"type", "disable_parallel_tool_use"},
    "any": {"type", "disable_parallel_tool_use"},
    "tool": {"type", "name", "disable_parallel_tool_use"},
    "none": {"type"},
}
JSON_FRAGMENT_CHARS = 8
# platform.claude.com "Claude API errors" (and anthropic-sdk-python's ErrorType).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
PROMPT_TOO_LONG = "prompt is too long: 250000 tokens > 200000 maximum"
# The streaming docs' example of an error sent after the 200 (their spacing, not the compact one).
OVERLOADED_EVENT = '{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}'
PING_EVENT = '{"type": "ping"}'


@dataclass
class Fault:
    """How the next requests fail. `status` answers with that HTTP status and the matching Anthropic error
    type (or `error_type`); `prompt_too_long` answers the API's 400 for an oversized prompt; `hang_s` waits
    before answering; in streams, `cut_after` ends the body after that many content deltas without
    message_stop, `malformed_after` sends a non-JSON event and ends, `error_event_after` sends an `error`
    event (overloaded_error, as the docs show) and ends."""

    status: int = 0
    error_type: str | None = None
    message: str = "mock failure"
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    error_event_after: int | None = None
    prompt_too_long: bool = False


def error_type_for(status: int) -> str:
    """The Anthropic error type of an HTTP status; other 4XX are invalid_request_error, other 5XX api_error."""
    return ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


class MockAnthropic(LoopbackServer):
    def __init__(
        self,
        *,
        api_key: str | None = None,
        reply_prefix: str = "mock: ",
        chunk_delay_s: float = 0.0,
        cached_tokens: int = 0,
        leading_empty_json_delta: bool = False,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.reply_prefix = reply_prefix
        self.chunk_delay_s = chunk_delay_s
        self.cached_tokens = cached_tokens
        self.leading_empty_json_delta = leading_empty_json_delta
        self.fault: Fault | None = None
        # Bodies of the requests that parsed as JSON, and the headers (lower-cased names) of every request.
        self.requests: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.requests_received = 0
        self.messages_made = 0
        self.tool_uses_made = 0

    @property
    def base_url(self) -> str:
        """The API root without /v1: clients append /v1/messages."""
        return f"http://127.0.0.1:{self.port}"

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/messages", self._messages)
        router.add_route("*", "/{tail:.*}", self._not_found)

    def _request_id(self) -> str:
        self.requests_received += 1
        return f"req_mock_{self.requests_received}"

    async def _not_found(self, request: web.Request) -> web.Response:
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        return _error(404, "not_found_error", "Not Found", self._request_id())

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        request_id = self._request_id()
        self.headers.append({name.lower(): value for name, value in request.headers.items()})
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        else:
            self.requests.append(body)
        if self.api_key:
            key = request.headers.get("x-api-key")
            if key is None:
                return _error(401, "authentication_error", "x-api-key header is required", request_id)
            if key != self.api_key:
                return _error(401, "authentication_error", "invalid x-api-key", request_id)
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required", request_id)
        if request.content_type != "application/json":
            # Mock wording: the API's own message for this case is not documented.
            return _error(400, "invalid_request_error", "content-type: must be application/json", request_id)
        if body is None:
            # Mock wording, like the above.
            return _error(400, "invalid_request_error", "The request body is not valid JSON.", request_id)
        problem = _validate(body)
        if problem:
            return _error(400, "invalid_request_error", problem, request_id)
        fault = self.fault
        if fault and fault.hang_s:
            await asyncio.sleep(fault.hang_s)
        if fault and fault.prompt_too_long:
            return _error(400, "invalid_request_error", PROMPT_TOO_LONG, request_id, fault.headers)
        if fault and fault.status:
            kind = fault.error_type or error_type_for(fault.status)
            return _error(fault.status, kind, fault.message, request_id, fault.headers)
        return await self._answer(request, request_id, body, fault)

    async def _answer(
        self, request: web.Request, request_id: str, body: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        self.messages_made += 1
        message_id = f"msg_mock_{self.messages_made}"
        max_tokens: int = body["max_tokens"]
        tool = _tool_to_call(body)
        stop_sequence: str | None = None
        if tool is not None:
            self.tool_uses_made += 1
            tool_input = {"text": _last_user_text(body["messages"])}
            arguments = json.dumps(tool_input)
            fragments = [arguments[i : i + JSON_FRAGMENT_CHARS] for i in range(0, len(arguments), JSON_FRAGMENT_CHARS)]
            stop_reason = "tool_use"
            # One output token per fragment: a small max_tokens truncates the input, which then is no object.
            if len(fragments) > max_tokens:
                fragments, stop_reason, tool_input = fragments[:max_tokens], "max_tokens", {}
            block = {"type": "tool_use", "id": f"toolu_mock_{self.tool_uses_made}", "name": tool, "input": tool_input}
            start = {**block, "input": {}}
            pieces = ["", *fragments] if self.leading_empty_json_delta else fragments
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
            output_tokens = len(fragments)
        else:
            text, stop_reason, stop_sequence = _reply_text(body, self.reply_prefix)
            words = text.split(" ") if text else []
            if len(words) > max_tokens:
                words, stop_reason, stop_sequence = words[:max_tokens], "max_tokens", None
                text = " ".join(words)
            block = {"type": "text", "text": text}
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": word if i == 0 else " " + word} for i, word in enumerate(words)]
            output_tokens = len(words)
        usage = {
            "input_tokens": len(json.dumps(body["messages"])) // 4,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cached_tokens,
            "output_tokens": output_tokens,
        }
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [block],
            "model": body["model"],
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": request_id})
        first = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": {**usage}}
        first["usage"]["output_tokens"] = 1
        final = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        return await self._stream(request, request_id, first, start, deltas, final, output_tokens, fault)

    async def _stream(
        self,
        request: web.Request,
        request_id: str,
        first: dict[str, Any],
        start: dict[str, Any],
        deltas: list[dict[str, Any]],
        final: dict[str, Any],
        output_tokens: int,
        fault: Fault | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": request_id,
            }
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any] | str) -> None:
            text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
            await response.write(f"event: {event}\ndata: {text}\n\n".encode())
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)

        await send("message_start", {"type": "message_start", "message": first})
        await send("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start})
        await send("ping", PING_EVENT)
        for i, delta in enumerate(deltas):
            if fault and fault.cut_after == i:
                return response
            if fault and fault.malformed_after == i:
                await send("content_block_delta", "{not json")
                return response
            if fault and fault.error_event_after == i:
                if fault.error_type:
                    error = {"type": "error", "error": {"type": fault.error_type, "message": fault.message}}
                    await send("error", json.dumps(error))
                else:
                    await send("error", OVERLOADED_EVENT)
                return response
            await send("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await send(
            "message_delta", {"type": "message_delta", "delta": final, "usage": {"output_tokens": output_tokens}}
        )
        await send("message_stop", {"type": "message_stop"})
        return response


def _error(
    status: int, kind: str, message: str, request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    return web.json_response(body, status=status, headers={**(headers or {}), "request-id": request_id})


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A validated message's content as blocks (a string is one text block)."""
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _text_of(content: Any) -> str:
    """The text of a content string or of the text blocks in a list of blocks, joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(block["text"] for block in content if block.get("type") == "text")
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return _text_of(message["content"])
    return ""


def _tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [block for block in _blocks(message) if block["type"] == "tool_result"]


def _tool_to_call(body: dict[str, Any]) -> str | None:
    """The name of the tool the model calls instead of answering, if it does."""
    tools = body.get("tools")
    choice = body.get("tool_choice") or {"type": "auto"}
    last = body["messages"][-1]
    if not tools or choice["type"] == "none" or last["role"] != "user" or _tool_results(last):
        return None
    if choice["type"] == "tool":
        return str(choice["name"])
    return str(tools[0]["name"])


def _reply_text(body: dict[str, Any], prefix: str) -> tuple[str, str, str | None]:
    """The text answer, its stop reason and the stop sequence that cut it, if one did."""
    last = body["messages"][-1]
    results = _tool_results(last) if last["role"] == "user" else []
    if results:
        text = prefix + "tool said: " + _text_of(results[0].get("content", ""))
    else:
        text = prefix + _last_user_text(body["messages"])
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s in text]
    if hits:
        at, sequence = min(hits)
        return text[:at], "stop_sequence", sequence
    return text, "end_turn", None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(body: Any) -> str | None:
    """Why the API would refuse this request body with a 400, in its words; None when it would not."""
    if not isinstance(body, dict):
        return "Input should be a valid dictionary or object to extract fields from"
    unknown = sorted(set(body) - KNOWN_PARAMETERS)
    if unknown:
        return f"{unknown[0]}: Extra inputs are not permitted"
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            return f"{name}: Field required"
    if not isinstance(body["model"], str):
        return "model: Input should be a valid string"
    if not body["model"]:
        return "model: String should have at least 1 character"
    if not _is_integer(body["max_tokens"]):
        return "max_tokens: Input should be a valid integer"
    if body["max_tokens"] < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if "stream" in body and not isinstance(body["stream"], bool):
        return "stream: Input should be a valid boolean"
    return (
        _validate_sampling(body)
        or _validate_system(body)
        or _validate_metadata(body)
        or _validate_thinking(body)
        or _validate_messages(body["messages"])
        or _validate_tools(body)
    )


def _validate_sampling(body: dict[str, Any]) -> str | None:
    for name in ("temperature", "top_p"):
        if name not in body:
            continue
        value = body[name]
        if not _is_number(value):
            return f"{name}: Input should be a valid number"
        if value < 0:
            return f"{name}: Input should be greater than or equal to 0"
        if value > 1:
            return f"{name}: Input should be less than or equal to 1"
    if "top_k" in body:
        if not _is_integer(body["top_k"]):
            return "top_k: Input should be a valid integer"
        if body["top_k"] < 0:
            return "top_k: Input should be greater than or equal to 0"
    if "stop_sequences" in body:
        sequences = body["stop_sequences"]
        if not isinstance(sequences, list):
            return "stop_sequences: Input should be a valid list"
        for i, sequence in enumerate(sequences):
            if not isinstance(sequence, str):
                return f"stop_sequences.{i}: Input should be a valid string"
        if any(not sequence.strip() for sequence in sequences):
            return "stop_sequences: each stop sequence must contain non-whitespace"
    if "service_tier" in body and body["service_tier"] not in ("auto", "standard_only"):
        return "service_tier: Input should be 'auto' or 'standard_only'"
    return None


def _validate_system(body: dict[str, Any]) -> str | None:
    if "system" not in body or isinstance(body["system"], str):
        return None
    system = body["system"]
    if not isinstance(system, list):
        return "system: Input should be a valid string"
    for i, block in enumerate(system):
        where = f"system.{i}"
        if not isinstance(block, dict):
            return f"{where}: Input should be a valid dictionary or object to extract fields from"
        if block.get("type") != "text":
            return f"{where}.type: Input should be 'text'"
        problem = _validate_text_block(block, where)
        if problem:
            return problem
    return None


def _validate_metadata(body: dict[str, Any]) -> str | None:
    if "metadata" not in body:
        return None
    metadata = body["metadata"]
    if not isinstance(metadata, dict):
        return "metadata: Input should be a valid dictionary or object to extract fields from"
    extra = sorted(set(metadata) - {"user_id"})
    if extra:
        return f"metadata.{extra[0]}: Extra inputs are not permitted"
    if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
        return "metadata.user_id: Input should be a valid string"
    return None


def _validate_thinking(body: dict[str, Any]) -> str | None:
    if "thinking" not in body:
        return None
    thinking = body["thinking"]
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind not in ("enabled", "disabled", "adaptive"):
        return (
            f"thinking: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            "'enabled', 'disabled', 'adaptive'"
        )
    if kind != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if budget is None:
        return "thinking.enabled.budget_tokens: Field required"
    if not _is_integer(budget):
        return "thinking.enabled.budget_tokens: Input should be a valid integer"
    if budget < 1024:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if body["max_tokens"] <= budget:
        return "`max_tokens` must be greater than `thinking.budget_tokens`"
    return None


def _validate_messages(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        problem = _validate_message(message, i, last=i == len(messages) - 1)
        if problem:
            return problem
    if messages[0]["role"] != "user":
        return 'messages: first message must use the "user" role'
    return _validate_tool_turns(messages)


def _validate_message(message: Any, i: int, *, last: bool) -> str | None:
    where = f"messages.{i}"
    if not isinstance(message, dict):
        return f"{where}: Input should be a valid dictionary or object to extract fields from"
    role = message.get("role")
    if role == "system":
        return (
            'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, '
            'not "system" as an input message role.'
        )
    if "role" not in message:
        return f"{where}.role: Field required"
    if role not in ROLES:
        return f"{where}.role: Input should be 'user' or 'assistant'"
    extra = sorted(set(message) - {"role", "content"})
    if extra:
        return f"{where}.{extra[0]}: Extra inputs are not permitted"
    if "content" not in message:
        return f"{where}.content: Field required"
    content = message["content"]
    if not isinstance(content, str | list):
        return f"{where}.content: Input should be a valid string"
    if not content and not (last and role == "assistant"):
        return f"{where}: all messages must have non-empty content except for the optional final assistant message"
    if isinstance(content, str):
        return None
    for j, block in enumerate(content):
        problem = _validate_block(block, f"{where}.content.{j}", role)
        if problem:
            return problem
    return None


def _validate_block(block: Any, where: str, role: str) -> str | None:
    if not isinstance(block, dict):
        return f"{where}: Input should be a valid dictionary or object to extract fields from"
    if "type" not in block:
        return f"{where}: Unable to extract tag using discriminator 'type'"
    kind = block["type"]
    if kind not in BLOCK_FIELDS:
        tags = ", ".join(f"'{tag}'" for tag in BLOCK_FIELDS)
        return f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags: {tags}"
    extra = sorted(set(block) - BLOCK_FIELDS[kind])
    if extra:
        return f"{where}.{kind}.{extra[0]}: Extra inputs are not permitted"
    if kind == "text":
        return _validate_text_block(block, where)
    if kind == "image":
        return _validate_image_block(block, where)
    if kind == "tool_use":
        # Mock wording: the API refuses tool_use blocks in user turns; its message is not documented.
        if role != "assistant":
            return f"{where}: `tool_use` blocks are only allowed in assistant messages"
        for name in ("id", "name"):
            if not isinstance(block.get(name), str):
                return f"{where}.tool_use.{name}: Field required"
        if not isinstance(block.get("input"), dict):
            return f"{where}.tool_use.input: Input should be a valid dictionary"
        return None
    # Mock wording, like tool_use's.
    if role != "user":
        return f"{where}: `tool_result` blocks are only allowed in user messages"
    if not isinstance(block.get("tool_use_id"), str):
        return f"{where}.tool_result.tool_use_id: Field required"
    if "is_error" in block and not isinstance(block["is_error"], bool):
        return f"{where}.tool_result.is_error: Input should be a valid boolean"
    content = block.get("content", "")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}.tool_result.content: Input should be a valid string"
    for k, part in enumerate(content):
        inner = f"{where}.tool_result.content.{k}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            problem = _validate_text_block(part, inner)
        elif kind == "image":
            problem = _validate_image_block(part, inner)
        else:
            problem = (
                f"{inner}: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
                "'text', 'image'"
            )
        if problem:
            return problem
    return None


def _validate_text_block(block: dict[str, Any], where: str) -> str | None:
    scope = where.split(".", 1)[0]
    extra = sorted(set(block) - BLOCK_FIELDS["text"])
    if extra:
        return f"{where}.text.{extra[0]}: Extra inputs are not permitted"
    if "text" not in block:
        return f"{where}.text.text: Field required"
    if not isinstance(block["text"], str):
        return f"{where}.text.text: Input should be a valid string"
    if not block["text"]:
        return f"{scope}: text content blocks must be non-empty"
    if not block["text"].strip():
        return f"{scope}: text content blocks must contain non-whitespace text"
    return None


def _validate_image_block(block: dict[str, Any], where: str) -> str | None:
    source = block.get("source")
    if not isinstance(source, dict):
        return f"{where}.image.source: Field required"
    kind = source.get("type")
    if kind == "base64":
        if source.get("media_type") not in IMAGE_MEDIA_TYPES:
            return (
                f"{where}.image.source.base64.media_type: "
                "Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
            )
        if not isinstance(source.get("data"), str):
            return f"{where}.image.source.base64.data: Field required"
        extra = sorted(set(source) - {"type", "media_type", "data"})
    elif kind == "url":
        if not isinstance(source.get("url"), str):
            return f"{where}.image.source.url.url: Field required"
        extra = sorted(set(source) - {"type", "url"})
    else:
        return (
            f"{where}.image.source: Input tag '{kind}' found using 'type' does not match any of the expected "
            "tags: 'base64', 'url'"
        )
    if extra:
        return f"{where}.image.source.{kind}.{extra[0]}: Extra inputs are not permitted"
    return None


def _validate_tool_turns(messages: list[dict[str, Any]]) -> str | None:
    """Each assistant tool_use is answered by a tool_result, first in the next user message, and no result
    answers a call that the previous message did not make."""
    for i, message in enumerate(messages):
        blocks = _blocks(message)
        previous = _blocks(messages[i - 1]) if i and messages[i - 1]["role"] == "assistant" else []
        asked = [block["id"] for block in previous if block["type"] == "tool_use"]
        for j, block in enumerate(blocks):
            if block["type"] == "tool_result" and block["tool_use_id"] not in asked:
                return (
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
        ids = [block["id"] for block in blocks if block["type"] == "tool_use"]
        if message["role"] != "assistant" or not ids:
            continue
        after = messages[i + 1] if i + 1 < len(messages) and messages[i + 1]["role"] == "user" else None
        following = _blocks(after) if after else []
        answered = {block["tool_use_id"] for block in following if block["type"] == "tool_result"}
        missing = [call_id for call_id in ids if call_id not in answered]
        if missing:
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block "
                "in the next message."
            )
        leading = 0
        while leading < len(following) and following[leading]["type"] == "tool_result":
            leading += 1
        if any(block["type"] == "tool_result" for block in following[leading:]):
            return (
                f"messages.{i + 1}: Did not find {len(ids)} tool_result block(s) at the beginning of this "
                "message. Messages following tool_use blocks must begin with a matching number of "
                "tool_result blocks."
            )
    return None


def _validate_tools(body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for i, tool in enumerate(tools):
            problem = _validate_tool(tool, f"tools.{i}")
            if problem:
                return problem
            names.append(tool["name"])
        if len(set(names)) != len(names):
            return "tools: Tool names must be unique."
    if "tool_choice" not in body:
        return None
    if not names:
        return "tool_choice may only be specified while providing tools."
    choice = body["tool_choice"]
    if not isinstance(choice, dict):
        return "tool_choice: Input should be a valid dictionary or object to extract fields from"
    kind = choice.get("type")
    if kind not in TOOL_CHOICE_FIELDS:
        return (
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the expected tags: "
            "'auto', 'any', 'tool', 'none'"
        )
    extra = sorted(set(choice) - TOOL_CHOICE_FIELDS[kind])
    if extra:
        return f"tool_choice.{kind}.{extra[0]}: Extra inputs are not permitted"
    if "disable_parallel_tool_use" in choice and not isinstance(choice["disable_parallel_tool_use"], bool):
        return f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean"
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            return "tool_choice.tool.name: Field required"
        if choice["name"] not in names:
            return f"Tool '{choice['name']}' not found in provided tools"
    return None


def _validate_tool(tool: Any, where: str) -> str | None:
    if not isinstance(tool, dict):
        return f"{where}: Input should be a valid dictionary or object to extract fields from"
    kind = tool.get("type")
    if kind not in (None, "custom"):
        # Server tools (web_search_..., bash_..., ...) exist in the API but not in this mock.
        return f"{where}: Input tag '{kind}' found using 'type' does not match any of the expected tags: 'custom'"
    extra = sorted(set(tool) - TOOL_FIELDS)
    if extra:
        return f"{where}.custom.{extra[0]}: Extra inputs are not permitted"
    name = tool.get("name")
    if name is None:
        return f"{where}.custom.name: Field required"
    if not isinstance(name, str):
        return f"{where}.custom.name: Input should be a valid string"
    if not TOOL_NAME.fullmatch(name):
        return f"{where}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
    if "description" in tool and not isinstance(tool["description"], str):
        return f"{where}.custom.description: Input should be a valid string"
    schema = tool.get("input_schema")
    if schema is None:
        return f"{where}.custom.input_schema: Field required"
    if not isinstance(schema, dict):
        return f"{where}.custom.input_schema: Input should be a valid dictionary"
    if schema.get("type") != "object":
        return f"{where}.custom.input_schema.type: Input should be 'object'"
    return None

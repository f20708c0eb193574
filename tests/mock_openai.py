"""A local server speaking the OpenAI chat completions protocol, for tests.

It validates requests the way the real API does (unknown arguments, roles,
parameter ranges, stream_options without stream, malformed tools, tool_choice
without tools, tool messages answering no tool call, bad response_format are
all 400s with OpenAI's error body) and answers deterministically:

- "<reply_prefix><last user text>" as text;
- a call of the forced (else the first) tool with arguments `{"text": <last user text>}` when
  tools are given, tool_choice is not "none" and the last message is the user's;
- "<reply_prefix>tool said: <tool text>" when the last message is a tool result;
- `{"answer": <that text>}` as JSON text under a json_object or json_schema response_format;
- text cut before the first `stop` sequence it contains, with finish_reason "stop".

Streams are server-sent `chat.completion.chunk` events ending in `data: [DONE]`,
with a usage chunk when `stream_options.include_usage` is set; tool call arguments
stream as fragments of 8 characters. A `fault` makes it misbehave in one of the
ways real upstreams do.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from aiohttp import web

from tests.loopback import LoopbackServer

KNOWN_ARGUMENTS = {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
    "n",
    "user",
    "logit_bias",
    "response_format",
    "tools",
    "tool_choice",
    "logprobs",
    "top_logprobs",
    "parallel_tool_calls",
}
ROLES = {"system", "user", "assistant", "tool", "developer"}
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_TOOLS = 128
ARGUMENT_FRAGMENT_CHARS = 8
TOOL_CHOICE_MODES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
# What `Fault.invalid_json` answers with: the start of a completion, cut off.
INVALID_JSON_BODY = '{"id": "chatcmpl-x", "choices": ['


@dataclass
class Fault:
    """How the next requests fail, the ways real upstreams do. Only a request that validates meets
    its fault: `hang_s` first, then a `status` answer instead of a completion; the other fields
    break the completion itself.

    - `status`: answer with that HTTP status and an OpenAI error body whose `type` is
      `rate_limit_error` for 429, `invalid_request_error` for other 4xx and `server_error` for
      5xx (529 included; the gateway classifies 529 by its status), with `code` and `message`.
    - `headers`: sent with a `status` answer (e.g. `{"Retry-After": "7"}` on a 429).
    - `hang_s`: wait that long before anything, headers included (a hang before headers).
    - `cut_after`: a stream ends cleanly after that many content chunks, without a finish
      reason or `[DONE]` (tool call argument fragments count as content chunks here and below).
    - `malformed_after`: a stream sends a non-JSON chunk after that many content chunks, then ends.
    - `error_event_after`: a stream sends an OpenAI error event after that many content chunks.
    - `reset_after_bytes`: unary: send the headers (with the full Content-Length) and that many
      bytes of the body, then reset the TCP connection (RST: SO_LINGER 0, transport.abort());
      stream: the same after that many bytes of the event stream (the events' bytes, not the
      chunked framing), possibly in the middle of an event. A shorter answer completes.
    - `stall_after`, `stall_s`: a stream goes silent for `stall_s` seconds before its content chunk
      number `stall_after` (0: a slow first token, the role chunk already sent), then goes on
      normally.
    - `invalid_json`: unary: a 200 with Content-Type application/json whose body is not JSON
      (`INVALID_JSON_BODY`). Streams ignore it (see `malformed_after`).

    A refused connection needs no fault: point the deployment at a port nothing listens on."""

    status: int = 0
    code: str | None = None
    message: str = "mock failure"
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    error_event_after: int | None = None
    reset_after_bytes: int | None = None
    stall_after: int | None = None
    stall_s: float = 0.0
    invalid_json: bool = False


class Invalid(NamedTuple):
    """Why a request is a 400: OpenAI's `message`, the offending `param` and an error `code`."""

    message: str
    param: str | None = None
    code: str | None = None


class MockOpenAI(LoopbackServer):
    def __init__(
        self,
        *,
        api_key: str | None = None,
        reply_prefix: str = "mock: ",
        chunk_delay_s: float = 0.0,
        latency_s: float = 0.0,
        fail_every: int = 0,
        latency_spread: float = 0.0,
        reword_every: int = 0,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.reply_prefix = reply_prefix
        self.chunk_delay_s = chunk_delay_s
        # A known profile: each answer waits `latency_s` first (times a log-normal factor of
        # sigma `latency_spread`, drawn from a seeded generator), every `fail_every`-th valid
        # request (counted from 1) fails with a 500, and every `reword_every`-th answer says
        # something else than the question's echo.
        self.latency_s = latency_s
        self.fail_every = fail_every
        self.latency_spread = latency_spread
        self.reword_every = reword_every
        self.answered = 0
        self._random = random.Random(0)
        self.fault: Fault | None = None
        self.requests: list[dict[str, Any]] = []
        self.tool_calls_made = 0
        # Azure OpenAI's form of the API: the deployment in the path, `api-key`, `api-version`.
        self.azure_deployment = "mock-deployment"
        self.azure_api_versions = {"2024-10-21", "2025-04-01-preview"}
        self.headers: list[dict[str, str]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/chat/completions", self._chat)
        router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_chat)

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _azure_chat(self, request: web.Request) -> web.StreamResponse:
        """Azure's answers to a wrong version, key or deployment, then the same chat as OpenAI's
        (the body's `model` is optional there: the deployment chose it)."""
        self.headers.append(dict(request.headers))
        if request.query.get("api-version") not in self.azure_api_versions:
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        if self.api_key and request.headers.get("api-key") != self.api_key:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
                "valid key for an active subscription and use a correct regional API endpoint for your resource."
            )
            return web.json_response({"error": {"code": "401", "message": message}}, status=401)
        if request.match_info["deployment"] != self.azure_deployment:
            message = (
                "The API deployment for this resource does not exist. If you created the deployment within "
                "the last 5 minutes, please wait a moment and try again."
            )
            return web.json_response({"error": {"code": "DeploymentNotFound", "message": message}}, status=404)
        return await self._chat(request, model=self.azure_deployment)

    async def _chat(self, request: web.Request, *, model: str | None = None) -> web.StreamResponse:
        if model is None:
            self.headers.append(dict(request.headers))
            if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        self.requests.append(body)
        if model is not None and isinstance(body, dict):
            body = {"model": model, **body}
        problem = _validate(body)
        if problem:
            return _error(400, problem.message, "invalid_request_error", problem.code, param=problem.param)
        fault = self.fault
        self.answered += 1
        number = self.answered
        if self.latency_s:
            await asyncio.sleep(self.latency_s * self._random.lognormvariate(0, self.latency_spread))
        if self.fail_every and number % self.fail_every == 0:
            return _error(500, "the known profile's failure", "server_error")
        if fault and fault.hang_s:
            await asyncio.sleep(fault.hang_s)
        if fault and fault.status:
            kind = "rate_limit_error" if fault.status == 429 else "server_error"
            if fault.status < 500 and fault.status != 429:
                kind = "invalid_request_error"
            return _error(fault.status, fault.message, kind, fault.code, fault.headers)
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        tool = _tool_to_call(body)
        if tool is not None:
            return await self._tool_call(request, body, tool, max_tokens, fault)
        text, finish = _reply_text(body, self.reply_prefix)
        if self.reword_every and number % self.reword_every == 0:
            text = "I would put it quite differently."
        words = text.split(" ")
        if max_tokens and len(words) > max_tokens:
            words, finish = words[:max_tokens], "length"
        usage = _usage(body, len(words))
        if body.get("stream"):
            deltas = [{"content": word if i == 0 else " " + word} for i, word in enumerate(words)]
            first = {"role": "assistant", "content": ""}
            return await self._stream(request, body, first, deltas, finish, usage, fault)
        message = {"role": "assistant", "content": " ".join(words), "refusal": None}
        return await _unary(request, _completion(body, message, finish, usage), fault)

    async def _tool_call(
        self,
        request: web.Request,
        body: dict[str, Any],
        tool: str,
        max_tokens: int | None,
        fault: Fault | None,
    ) -> web.StreamResponse:
        self.tool_calls_made += 1
        call_id = f"call_mock_{self.tool_calls_made}"
        arguments = json.dumps({"text": _last_user_text(body["messages"])})
        step = ARGUMENT_FRAGMENT_CHARS
        fragments = [arguments[i : i + step] for i in range(0, len(arguments), step)]
        finish = "tool_calls"
        # One token opens the call, one per fragment: a small max_tokens truncates the arguments.
        if max_tokens and len(fragments) + 1 > max_tokens:
            fragments, finish = fragments[: max_tokens - 1], "length"
        usage = _usage(body, len(fragments) + 1)
        if body.get("stream"):
            first = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
                ],
            }
            deltas = [{"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]} for fragment in fragments]
            return await self._stream(request, body, first, deltas, finish, usage, fault)
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": tool, "arguments": "".join(fragments)}}
            ],
            "refusal": None,
        }
        return await _unary(request, _completion(body, message, finish, usage), fault)

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        first: dict[str, Any],
        deltas: list[dict[str, Any]],
        finish: str,
        usage: dict[str, Any],
        fault: Fault | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        base = {
            "id": "chatcmpl-mock2",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": body["model"],
            "system_fingerprint": "fp_mock",
        }

        reset_after = fault.reset_after_bytes if fault else None
        sent = 0

        async def send(payload: dict[str, Any] | str) -> bool:
            """Write one event; False when the fault reset the connection instead."""
            nonlocal sent
            data = payload if isinstance(payload, str) else json.dumps(payload)
            raw = f"data: {data}\n\n".encode()
            if reset_after is not None and sent + len(raw) > reset_after:
                if reset_after > sent:
                    await response.write(raw[: reset_after - sent])
                _reset(request)
                return False
            await response.write(raw)
            sent += len(raw)
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            return True

        if not await send({**base, "choices": [{"index": 0, "delta": first, "logprobs": None, "finish_reason": None}]}):
            return response
        for i, delta in enumerate(deltas):
            if fault and fault.stall_after == i:
                await asyncio.sleep(fault.stall_s)
            if fault and fault.cut_after == i:
                return response
            if fault and fault.malformed_after == i:
                await send("{not json")
                return response
            if fault and fault.error_event_after == i:
                await send(
                    {
                        "error": {
                            "message": "The server had an error while processing your request.",
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                )
                return response
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
            if not await send(chunk):
                return response
        if not await send({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]}):
            return response
        if (body.get("stream_options") or {}).get("include_usage") and not await send(
            {**base, "choices": [], "usage": usage}
        ):
            return response
        await send("[DONE]")
        return response


async def _unary(request: web.Request, completion: dict[str, Any], fault: Fault | None) -> web.StreamResponse:
    """A whole completion, or the way `fault` breaks it."""
    if fault and fault.invalid_json:
        return web.Response(text=INVALID_JSON_BODY, content_type="application/json")
    body = json.dumps(completion).encode()
    if fault and fault.reset_after_bytes is not None and fault.reset_after_bytes < len(body):
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(body)
        await response.prepare(request)
        if fault.reset_after_bytes:
            await response.write(body[: fault.reset_after_bytes])
        _reset(request)
        return response
    return web.json_response(completion)


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST: no FIN, nothing still buffered is sent."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _completion(body: dict[str, Any], message: dict[str, Any], finish: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
        "system_fingerprint": "fp_mock",
    }


def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, Any]:
    prompt_tokens = sum(len(json.dumps(m)) // 4 for m in body["messages"])
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _tool_to_call(body: dict[str, Any]) -> str | None:
    """The name of the tool the model calls instead of answering, if it does."""
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none" or body["messages"][-1]["role"] != "user":
        return None
    if isinstance(choice, dict):
        return str(choice["function"]["name"])
    return str(tools[0]["function"]["name"])


def _reply_text(body: dict[str, Any], prefix: str) -> tuple[str, str]:
    """The text answer and its finish reason: the reply, JSON-wrapped under a JSON response_format,
    cut before the first stop sequence it contains."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        text = prefix + "tool said: " + _text_of(last.get("content"))
    else:
        text = prefix + _last_user_text(body["messages"])
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        text = json.dumps({"answer": text})
    stop = body.get("stop")
    sequences = [stop] if isinstance(stop, str) else stop or []
    cuts = [text.find(s) for s in sequences if s and s in text]
    if cuts:
        text = text[: min(cuts)]
    return text, "stop"


def _validate(body: Any) -> Invalid | None:
    if not isinstance(body, dict):
        return Invalid("The request body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN_ARGUMENTS)
    if unknown:
        return Invalid(f"Unrecognized request argument supplied: {unknown[0]}")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return Invalid("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Invalid("'messages' must contain at least one message", "messages")
    problem = _validate_messages(messages)
    if problem:
        return problem
    for name, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        if name in body and not (isinstance(body[name], int | float) and low <= body[name] <= high):
            return Invalid(f"Invalid '{name}': must be between {low} and {high}.", name)
    if "max_tokens" in body and not (isinstance(body["max_tokens"], int) and body["max_tokens"] >= 1):
        return Invalid("Invalid 'max_tokens': integer below minimum value.", "max_tokens", "integer_below_min_value")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        return Invalid("Invalid 'stop': expected a string or an array of up to 4 strings.", "stop")
    if "stream_options" in body and not body.get("stream"):
        return Invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    return _validate_tools(body) or _validate_response_format(body)


def _validate_messages(messages: list[Any]) -> Invalid | None:
    # Ids of the latest assistant tool calls still waiting for their tool messages, and where they were asked.
    pending: dict[str, None] = {}
    answerable: set[str] = set()
    asked_at = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return Invalid(f"Invalid value for 'messages[{i}].role'", f"messages[{i}].role")
        role = message["role"]
        if role != "tool" and pending:
            return _unanswered(asked_at, pending)
        if role != "tool":
            answerable = set()
        content = message.get("content")
        if role == "assistant" and message.get("tool_calls") is not None:
            ids = _tool_call_ids(message["tool_calls"], i)
            if isinstance(ids, Invalid):
                return ids
            if content is not None:
                problem = _validate_content(content, i, images=False)
                if problem:
                    return problem
            pending, answerable, asked_at = dict.fromkeys(ids), set(ids), i
            continue
        # Tool results are text only; other roles keep the image parts they were always allowed.
        problem = _validate_content(content, i, images=role != "tool")
        if problem:
            return problem
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                return Invalid(
                    f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                    f"messages[{i}].tool_call_id",
                    "missing_required_parameter",
                )
            if call_id not in answerable:
                return Invalid(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.",
                    f"messages.[{i}].role",
                )
            pending.pop(call_id, None)
    if pending:
        return _unanswered(asked_at, pending)
    return None


def _unanswered(index: int, pending: dict[str, None]) -> Invalid:
    return Invalid(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}",
        f"messages.[{index}].role",
    )


def _tool_call_ids(tool_calls: Any, i: int) -> list[str] | Invalid:
    param = f"messages[{i}].tool_calls"
    if not isinstance(tool_calls, list):
        return Invalid(f"Invalid type for '{param}': expected an array.", param, "invalid_type")
    if not tool_calls:
        return Invalid(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            param,
            "empty_array",
        )
    ids = []
    for j, call in enumerate(tool_calls):
        where = f"{param}[{j}]"
        if not isinstance(call, dict):
            return Invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
        if not isinstance(call.get("id"), str):
            return Invalid(f"Missing required parameter: '{where}.id'.", f"{where}.id", "missing_required_parameter")
        if call.get("type") != "function":
            return Invalid(f"Invalid value for '{where}.type': expected 'function'.", f"{where}.type", "invalid_value")
        function = call.get("function")
        if not isinstance(function, dict):
            return Invalid(
                f"Missing required parameter: '{where}.function'.", f"{where}.function", "missing_required_parameter"
            )
        for key in ("name", "arguments"):
            if not isinstance(function.get(key), str):
                return Invalid(
                    f"Missing required parameter: '{where}.function.{key}'.",
                    f"{where}.function.{key}",
                    "missing_required_parameter",
                )
        ids.append(call["id"])
    return ids


def _validate_content(content: Any, i: int, *, images: bool) -> Invalid | None:
    param = f"messages[{i}].content"
    if not isinstance(content, str | list):
        return Invalid(f"Invalid type for '{param}'", param, "invalid_type")
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                return Invalid(f"Invalid content part in '{param}'", param)
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                continue
            if images and part.get("type") == "image_url" and isinstance((part.get("image_url") or {}).get("url"), str):
                continue
            return Invalid(f"Invalid content part in '{param}'", param)
    return None


def _validate_tools(body: dict[str, Any]) -> Invalid | None:
    tools = body.get("tools")
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return Invalid("Invalid type for 'tools': expected an array of objects.", "tools", "invalid_type")
        if not tools:
            return Invalid(
                "Invalid 'tools': empty array. Expected an array with minimum length 1, "
                "but got an empty array instead.",
                "tools",
                "empty_array",
            )
        if len(tools) > MAX_TOOLS:
            return Invalid(
                f"Invalid 'tools': array too long. Expected an array with maximum length {MAX_TOOLS}, "
                f"but got an array with length {len(tools)} instead.",
                "tools",
                "array_above_max_length",
            )
        for i, tool in enumerate(tools):
            name = _tool_name(tool, f"tools[{i}]")
            if isinstance(name, Invalid):
                return name
            names.append(name)
    for argument in ("tool_choice", "parallel_tool_calls"):
        if argument in body and body[argument] is not None and tools is None:
            return Invalid(
                f"Invalid value for '{argument}': '{argument}' is only allowed when 'tools' are specified.", argument
            )
    if "parallel_tool_calls" in body and not isinstance(body["parallel_tool_calls"], bool | None):
        return Invalid(
            "Invalid type for 'parallel_tool_calls': expected a boolean.", "parallel_tool_calls", "invalid_type"
        )
    return _validate_tool_choice(body.get("tool_choice"), names)


def _tool_name(tool: Any, where: str) -> str | Invalid:
    if not isinstance(tool, dict):
        return Invalid(f"Invalid type for '{where}': expected an object.", where, "invalid_type")
    extra = sorted(set(tool) - {"type", "function"})
    if extra:
        return Invalid(f"Unrecognized request argument supplied: {where}.{extra[0]}", f"{where}.{extra[0]}")
    if tool.get("type") != "function":
        return Invalid(
            f"Invalid value: '{tool.get('type')}'. Supported values are: 'function'.", f"{where}.type", "invalid_value"
        )
    function = tool.get("function")
    if not isinstance(function, dict):
        return Invalid(
            f"Missing required parameter: '{where}.function'.", f"{where}.function", "missing_required_parameter"
        )
    extra = sorted(set(function) - {"name", "description", "parameters", "strict"})
    if extra:
        return Invalid(
            f"Unrecognized request argument supplied: {where}.function.{extra[0]}", f"{where}.function.{extra[0]}"
        )
    problem = _name_problem(function.get("name"), f"{where}.function.name")
    if problem:
        return problem
    for key, kind, label in (
        ("description", str, "a string"),
        ("parameters", dict, "an object"),
        ("strict", bool, "a boolean"),
    ):
        if function.get(key) is not None and not isinstance(function[key], kind):
            return Invalid(
                f"Invalid type for '{where}.function.{key}': expected {label}.",
                f"{where}.function.{key}",
                "invalid_type",
            )
    return str(function["name"])


def _name_problem(name: Any, param: str) -> Invalid | None:
    if name is None:
        return Invalid(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    if not isinstance(name, str):
        return Invalid(f"Invalid type for '{param}': expected a string.", param, "invalid_type")
    if not NAME_PATTERN.fullmatch(name):
        return Invalid(
            f"Invalid '{param}': string does not match pattern. Expected a string that matches the pattern "
            "'^[a-zA-Z0-9_-]{1,64}$'.",
            param,
            "invalid_value",
        )
    return None


def _validate_tool_choice(choice: Any, names: list[str]) -> Invalid | None:
    if choice is None or choice in TOOL_CHOICE_MODES:
        return None
    if isinstance(choice, str):
        return Invalid(
            f"Invalid value: '{choice}'. Supported values are: 'none', 'auto', and 'required'.",
            "tool_choice",
            "invalid_value",
        )
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(function, dict):
        return Invalid(
            "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": ...}}.',
            "tool_choice",
            "invalid_value",
        )
    name = function.get("name")
    problem = _name_problem(name, "tool_choice.function.name")
    if problem:
        return problem
    if name not in names:
        return Invalid(
            f"Invalid value for 'tool_choice': function '{name}' is not one of the functions in 'tools'.",
            "tool_choice.function.name",
            "invalid_value",
        )
    return None


def _validate_response_format(body: dict[str, Any]) -> Invalid | None:
    if body.get("response_format") is None:
        return None
    response_format = body["response_format"]
    if not isinstance(response_format, dict):
        return Invalid("Invalid type for 'response_format': expected an object.", "response_format", "invalid_type")
    kind = response_format.get("type")
    if kind not in RESPONSE_FORMATS:
        return Invalid(
            f"Invalid value: '{kind}'. Supported values are: 'text', 'json_object', and 'json_schema'.",
            "response_format.type",
            "invalid_value",
        )
    allowed = {"type", "json_schema"} if kind == "json_schema" else {"type"}
    extra = sorted(set(response_format) - allowed)
    if extra:
        return Invalid(
            f"Unrecognized request argument supplied: response_format.{extra[0]}", f"response_format.{extra[0]}"
        )
    if kind == "json_object" and not any("json" in _text_of(m.get("content")).lower() for m in body["messages"]):
        return Invalid(
            "'messages' must contain the word 'json' in some form, to use 'response_format' of type 'json_object'.",
            "messages",
        )
    if kind != "json_schema":
        return None
    schema = response_format.get("json_schema")
    if not isinstance(schema, dict):
        return Invalid(
            "Missing required parameter: 'response_format.json_schema'.",
            "response_format.json_schema",
            "missing_required_parameter",
        )
    extra = sorted(set(schema) - {"name", "schema", "strict", "description"})
    if extra:
        return Invalid(
            f"Unrecognized request argument supplied: response_format.json_schema.{extra[0]}",
            f"response_format.json_schema.{extra[0]}",
        )
    problem = _name_problem(schema.get("name"), "response_format.json_schema.name")
    if problem:
        return problem
    for key, kind_, label in (
        ("schema", dict, "an object"),
        ("strict", bool, "a boolean"),
        ("description", str, "a string"),
    ):
        if schema.get(key) is not None and not isinstance(schema[key], kind_):
            param = f"response_format.json_schema.{key}"
            return Invalid(f"Invalid type for '{param}': expected {label}.", param, "invalid_type")
    return None


def _text_of(content: Any) -> str:
    """The text of a message's content: the string, or its text parts joined by spaces."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part["text"] for part in content if part.get("type") == "text")
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            return _text_of(message["content"])
    return ""


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)

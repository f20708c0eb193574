"""A local server speaking the OpenAI chat completions protocol, for tests.

It validates requests the way the real API does (unknown arguments, roles,
parameter ranges, stream_options without stream are all 400s with OpenAI's
error body) and answers deterministically: "<reply_prefix><last user text>".
Streams are server-sent `chat.completion.chunk` events ending in `data: [DONE]`,
with a usage chunk when `stream_options.include_usage` is set. A `fault` makes
it misbehave in one of the ways real upstreams do.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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


@dataclass
class Fault:
    """How the next requests fail. `status` answers with that HTTP status and an OpenAI error body;
    `hang_s` waits before answering; `cut_after` ends a stream after that many content chunks without
    a finish; `malformed_after` sends a non-JSON chunk; `error_event_after` sends an error event."""

    status: int = 0
    code: str | None = None
    message: str = "mock failure"
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0
    cut_after: int | None = None
    malformed_after: int | None = None
    error_event_after: int | None = None


class MockOpenAI:
    def __init__(self, *, api_key: str | None = None, reply_prefix: str = "mock: ", chunk_delay_s: float = 0.0) -> None:
        self.api_key = api_key
        self.reply_prefix = reply_prefix
        self.chunk_delay_s = chunk_delay_s
        self.fault: Fault | None = None
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> MockOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        # Hanging handlers are cancelled at once on stop instead of being awaited.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
        self.requests.append(body)
        problem = _validate(body)
        if problem:
            return _error(400, problem, "invalid_request_error")
        fault = self.fault
        if fault and fault.hang_s:
            await asyncio.sleep(fault.hang_s)
        if fault and fault.status:
            kind = "rate_limit_error" if fault.status == 429 else "server_error"
            if fault.status < 500 and fault.status != 429:
                kind = "invalid_request_error"
            return _error(fault.status, fault.message, kind, fault.code, fault.headers)
        text = self.reply_prefix + _last_user_text(body["messages"])
        words = text.split(" ")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        finish = "stop"
        if max_tokens and len(words) > max_tokens:
            words, finish = words[:max_tokens], "length"
        usage: dict[str, Any] = {
            "prompt_tokens": sum(len(json.dumps(m)) // 4 for m in body["messages"]),
            "completion_tokens": len(words),
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            return await self._stream(request, body, words, finish, usage, fault)
        return web.json_response(
            {
                "id": "chatcmpl-mock1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_mock",
            }
        )

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        words: list[str],
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

        async def send(payload: dict[str, Any] | str) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await response.write(f"data: {data}\n\n".encode())
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)

        await send(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                ],
            }
        )
        for i, word in enumerate(words):
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
            content = word if i == 0 else " " + word
            await send(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}],
                }
            )
        await send({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({**base, "choices": [], "usage": usage})
        await send("[DONE]")
        return response


def _validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    unknown = sorted(set(body) - KNOWN_ARGUMENTS)
    if unknown:
        return f"Unrecognized request argument supplied: {unknown[0]}"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' must contain at least one message"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"Invalid value for 'messages[{i}].role'"
        content = message.get("content")
        if not isinstance(content, str | list):
            return f"Invalid type for 'messages[{i}].content'"
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    continue
                if part.get("type") == "image_url" and isinstance((part.get("image_url") or {}).get("url"), str):
                    continue
                return f"Invalid content part in 'messages[{i}].content'"
    for name, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        if name in body and not (isinstance(body[name], int | float) and low <= body[name] <= high):
            return f"Invalid '{name}': must be between {low} and {high}."
    if "max_tokens" in body and not (isinstance(body["max_tokens"], int) and body["max_tokens"] >= 1):
        return "Invalid 'max_tokens': integer below minimum value."
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4)):
        return "Invalid 'stop': expected a string or an array of up to 4 strings."
    if "stream_options" in body and not body.get("stream"):
        return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
    return None


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return " ".join(part["text"] for part in content if part.get("type") == "text")
    return ""


def _error(
    status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)

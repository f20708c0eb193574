"""Anthropic's Messages API (https://docs.anthropic.com/en/api/messages).

What differs from the unified request: system prompts go in a top-level `system`;
`max_tokens` is required; content is a list of blocks, tool calls are `tool_use`
blocks in the assistant's turn and their results `tool_result` blocks in the next
user turn; streams are named server-sent events (message_start, content_block_start,
content_block_delta, message_delta, message_stop, error). What it cannot take
(penalties, seeds, JSON response formats, temperatures above 1) is refused, not dropped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from google.protobuf import json_format
from yarl import URL

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import AnthropicDeployment
from service.outcomes import Completion, StreamEvent, StreamFinished, UpstreamError, Usage, usage_with_cache
from service.providers.events import PendingDelta, ServerSentEvent, batched_deltas
from service.providers.http import HttpClient, classified_error, error_body, json_object
from service.providers.translate import NO_PENALTIES_OR_SEED, merged_turns, unsupported_sampling

_STOP_REASONS: dict[str, pb.FinishReason] = {
    "end_turn": pb.FINISH_REASON_STOP,
    "stop_sequence": pb.FINISH_REASON_STOP,
    "max_tokens": pb.FINISH_REASON_LENGTH,
    "model_context_window_exceeded": pb.FINISH_REASON_LENGTH,
    "tool_use": pb.FINISH_REASON_TOOL_CALLS,
    "refusal": pb.FINISH_REASON_CONTENT_FILTER,
}


class AnthropicProvider:
    def __init__(self, deployment: AnthropicDeployment, api_key: str | None) -> None:
        self.model = deployment.model
        self.default_max_tokens = deployment.default_max_tokens
        self._url = URL(str(deployment.base_url).rstrip("/") + "/v1/messages")
        headers = {"anthropic-version": deployment.anthropic_version}
        if api_key:
            headers["x-api-key"] = api_key
        self._client = HttpClient(deployment, headers=headers, http_error=_http_error)

    async def complete(self, request: pb.ChatRequest) -> Completion:
        body = self._body(request, stream=False)
        async with self._client.post(self._url, body) as response:
            raw = await self._client.body(response)
        try:
            data = json.loads(raw)
            blocks = data["content"]
            text = "".join(block["text"] for block in blocks if block["type"] == "text")
            tool_calls = tuple(
                pb.ToolCall(id=block["id"], name=block["name"], arguments=json.dumps(block["input"]))
                for block in blocks
                if block["type"] == "tool_use"
            )
            stop_reason = data.get("stop_reason") or ""
        except (ValueError, KeyError, TypeError) as error:
            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"unexpected response body: {error!r}") from error
        return Completion(
            text=text,
            tool_calls=tool_calls,
            finish_reason=_STOP_REASONS.get(stop_reason, pb.FINISH_REASON_UNSPECIFIED),
            usage=_usage(data.get("usage")),
            provider_request_id=str(data.get("id") or ""),
        )

    async def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        body = self._body(request, stream=True)
        state = _StreamState()
        async with self._client.events(self._url, body) as events:
            async for delta in batched_deltas(events, state.take, stop=lambda: state.stopped):
                yield delta
            # Checked inside: a failure after the 200 reports the 200 the upstream sent.
            if not state.stopped:
                raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended before message_stop")
        yield StreamFinished(
            finish_reason=_STOP_REASONS.get(state.stop_reason, pb.FINISH_REASON_UNSPECIFIED),
            usage=state.usage(),
            provider_request_id=state.message_id,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, request: pb.ChatRequest, *, stream: bool) -> dict[str, Any]:
        _refuse_what_anthropic_cannot_do(request)
        params = request.params
        system = "\n\n".join(
            part.text for m in request.messages if m.role == pb.ROLE_SYSTEM for part in m.content if part.text
        )
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens if params.HasField("max_tokens") else self.default_max_tokens,
            "messages": merged_turns(request.messages, _blocks),
        }
        if system:
            body["system"] = system
        if params.HasField("temperature"):
            body["temperature"] = params.temperature
        if params.HasField("top_p"):
            body["top_p"] = params.top_p
        if params.stop:
            body["stop_sequences"] = list(params.stop)
        if request.tools:
            body["tools"] = [_tool(tool) for tool in request.tools]
        if request.HasField("tool_choice") and (choice := _tool_choice(request.tool_choice)) is not None:
            body["tool_choice"] = choice
        if stream:
            body["stream"] = True
        return body


def _refuse_what_anthropic_cannot_do(request: pb.ChatRequest) -> None:
    """A parameter the API has no equivalent for fails the request rather than vanish from it."""
    problems = unsupported_sampling(request, NO_PENALTIES_OR_SEED)
    if problems:
        raise UpstreamError(
            pb.OUTCOME_BAD_REQUEST, f"the Anthropic Messages API does not support {', '.join(problems)}"
        )


def _blocks(message: pb.Message) -> list[dict[str, Any]]:
    if message.role == pb.ROLE_TOOL:
        text = "".join(part.text for part in message.content)
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": text}]
    blocks = [_content_block(part) for part in message.content]
    blocks += [
        {"type": "tool_use", "id": call.id, "name": call.name, "input": json.loads(call.arguments or "{}")}
        for call in message.tool_calls
    ]
    return blocks


def _content_block(part: pb.ContentPart) -> dict[str, Any]:
    if part.WhichOneof("part") == "text":
        return {"type": "text", "text": part.text}
    image = part.image
    if image.WhichOneof("source") == "url":
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    data = base64.b64encode(image.data).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": image.mime_type, "data": data}}


def _tool(tool: pb.Tool) -> dict[str, Any]:
    schema = json_format.MessageToDict(tool.parameters) if tool.parameters.fields else {}
    out: dict[str, Any] = {"name": tool.name, "input_schema": schema or {"type": "object", "properties": {}}}
    if tool.description:
        out["description"] = tool.description
    return out


def _tool_choice(choice: pb.ToolChoice) -> dict[str, Any] | None:
    if choice.WhichOneof("choice") == "tool_name":
        return {"type": "tool", "name": choice.tool_name}
    kind = {
        pb.TOOL_CHOICE_MODE_AUTO: "auto",
        pb.TOOL_CHOICE_MODE_NONE: "none",
        pb.TOOL_CHOICE_MODE_REQUIRED: "any",
    }.get(choice.mode)
    return {"type": kind} if kind else None


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return usage_with_cache(
        int(raw.get("input_tokens") or 0),
        int(raw.get("output_tokens") or 0),
        int(raw.get("cache_read_input_tokens") or 0),
        int(raw.get("cache_creation_input_tokens") or 0),
    )


class _StreamState:
    """What a stream has said so far: the message id, usage, the stop reason, which content
    blocks are tool calls (and their position among the calls)."""

    def __init__(self) -> None:
        self.message_id = ""
        self.stop_reason = ""
        self.stopped = False
        self._usage: dict[str, Any] = {}
        self._tool_index: dict[int, int] = {}

    def usage(self) -> Usage:
        return _usage(self._usage)

    def take(self, sse: ServerSentEvent, pending: PendingDelta) -> None:
        name, data = sse.event, sse.data
        event = json_object(data, "stream event")
        if name == "error" or event.get("type") == "error":
            detail = event.get("error") or {}
            kind = str(detail.get("type") or "")
            # An error after the 200 header: overloaded_error is the common one.
            status = 529 if kind == "overloaded_error" else 429 if kind == "rate_limit_error" else 500
            raise classified_error(status, str(detail.get("message") or data[:300]), kind=kind)
        match name:
            case "message_start":
                message = event.get("message") or {}
                self.message_id = str(message.get("id") or "")
                self._usage.update(message.get("usage") or {})
            case "content_block_start":
                block = event.get("content_block") or {}
                if block.get("type") == "tool_use":
                    position = len(self._tool_index)
                    self._tool_index[int(event.get("index", -1))] = position
                    tool_use = pb.ToolCallDelta(index=position, id=str(block["id"]), name=str(block["name"]))
                    pending.calls.append(tool_use)
                elif block.get("type") == "text" and block.get("text"):
                    pending.texts.append(block["text"])
            case "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    pending.texts.append(delta["text"])
                elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                    call = self._tool_index.get(int(event.get("index", -1)))
                    if call is None:
                        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "input_json_delta outside a tool_use block")
                    pending.add_arguments(call, delta["partial_json"])
            case "message_delta":
                self.stop_reason = str((event.get("delta") or {}).get("stop_reason") or self.stop_reason)
                self._usage.update(event.get("usage") or {})
            case "message_stop":
                self.stopped = True
            case _:
                pass  # ping, content_block_stop and event types added later


def _http_error(status: int, headers: Mapping[str, str], text: str) -> UpstreamError:
    body = error_body(text)
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = str(detail.get("message") or text[:300])
        return classified_error(status, message, kind=str(detail.get("type") or ""), headers=headers)
    return classified_error(status, text[:300], headers=headers)

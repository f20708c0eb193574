"""The OpenAI chat completions protocol, spoken by OpenAI, vLLM, Ollama, Groq, Together and others.

Request and response shapes follow https://platform.openai.com/docs/api-reference/chat:
unary answers in `choices[0].message`, streams as server-sent events of
`chat.completion.chunk` objects ending with `data: [DONE]`, usage in the last
chunk when `stream_options.include_usage` is set.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from yarl import URL

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import OpenAICompatibleDeployment
from service.outcomes import Completion, StreamEvent, StreamFinished, TextDelta, UpstreamError, Usage
from service.providers.http import HttpClient, classified, error_body, retry_after, server_sent_events

_ROLES = {
    pb.ROLE_SYSTEM: "system",
    pb.ROLE_USER: "user",
    pb.ROLE_ASSISTANT: "assistant",
    pb.ROLE_TOOL: "tool",
}
_FINISH_REASONS: dict[str, pb.FinishReason] = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "function_call": pb.FINISH_REASON_TOOL_CALLS,
    "content_filter": pb.FINISH_REASON_CONTENT_FILTER,
}
_OPTIONAL_PARAMS = ("temperature", "top_p", "max_tokens", "seed", "presence_penalty", "frequency_penalty")


class OpenAICompatibleProvider:
    def __init__(self, deployment: OpenAICompatibleDeployment, api_key: str | None) -> None:
        self.model = deployment.model
        self._url = URL(str(deployment.base_url).rstrip("/") + "/chat/completions")
        self._client = HttpClient(
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout_s=deployment.timeout_s,
            max_connections=deployment.max_connections,
        )

    async def complete(self, request: pb.ChatRequest) -> Completion:
        with classified():
            async with self._client.post(self._url, self._body(request, stream=False)) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _http_error(response.status, response.headers, raw.decode(errors="replace"))
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"unexpected response body: {error!r}") from error
        return Completion(
            text=text,
            finish_reason=_FINISH_REASONS.get(choice.get("finish_reason") or "", pb.FINISH_REASON_UNSPECIFIED),
            usage=_usage(data.get("usage")),
            provider_request_id=str(data.get("id") or ""),
        )

    async def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        body = self._body(request, stream=True)
        finish_reason: pb.FinishReason | None = None
        usage = Usage()
        request_id = ""
        done = False
        with classified():
            async with self._client.post(self._url, body) as response:
                if response.status >= 400:
                    detail = (await response.read()).decode(errors="replace")
                    raise _http_error(response.status, response.headers, detail)
                if response.content_type != "text/event-stream":
                    raise UpstreamError(
                        pb.OUTCOME_PROTOCOL_ERROR, f"not an event stream: Content-Type {response.content_type!r}"
                    )
                async for events in server_sent_events(response.content.iter_any()):
                    # Content that arrived in one read goes on as one delta: fewer, larger messages
                    # when the upstream outpaces the client, and no waiting when it does not.
                    texts: list[str] = []
                    try:
                        for event in events:
                            if event.data == "[DONE]":
                                done = True
                                break
                            chunk = _parse_chunk(event.data)
                            request_id = request_id or str(chunk.get("id") or "")
                            if chunk.get("usage"):
                                usage = _usage(chunk["usage"])
                            for choice in chunk.get("choices") or ():
                                if text := (choice.get("delta") or {}).get("content"):
                                    texts.append(text)
                                if reason := choice.get("finish_reason"):
                                    finish_reason = _FINISH_REASONS.get(reason, pb.FINISH_REASON_UNSPECIFIED)
                    except UpstreamError:
                        if texts:
                            yield TextDelta("".join(texts))
                        raise
                    if texts:
                        yield TextDelta("".join(texts))
                    if done:
                        break
        if not done and finish_reason is None:
            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended before its finish reason or [DONE]")
        yield StreamFinished(
            finish_reason=finish_reason if finish_reason is not None else pb.FINISH_REASON_UNSPECIFIED,
            usage=usage,
            provider_request_id=request_id,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, request: pb.ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": [_message(m) for m in request.messages]}
        params = request.params
        for name in _OPTIONAL_PARAMS:
            if params.HasField(name):
                body[name] = getattr(params, name)
        if params.stop:
            body["stop"] = list(params.stop)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body


def _message(message: pb.Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _ROLES[message.role]}
    if all(part.WhichOneof("part") == "text" for part in message.content):
        out["content"] = "".join(part.text for part in message.content)
    else:
        out["content"] = [_content_part(part) for part in message.content]
    if message.name:
        out["name"] = message.name
    return out


def _content_part(part: pb.ContentPart) -> dict[str, Any]:
    if part.WhichOneof("part") == "text":
        return {"type": "text", "text": part.text}
    image = part.image
    if image.WhichOneof("source") == "url":
        url = image.url
    else:
        url = f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_input_tokens=int(details.get("cached_tokens") or 0),
    )


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as error:
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"malformed stream chunk: {data[:200]!r}") from error
    if not isinstance(chunk, dict):
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"stream chunk is not an object: {data[:200]!r}")
    if "error" in chunk:
        # Servers report failures after the 200 header as an error event.
        raise _error_from_body(500, chunk, data)
    return chunk


def _http_error(status: int, headers: Mapping[str, str], text: str) -> UpstreamError:
    error = _error_from_body(status, error_body(text), text)
    if error.outcome == pb.OUTCOME_RATE_LIMITED:
        error.retry_after_s = retry_after(headers)
    return error


def _error_from_body(status: int, body: Any, text: str) -> UpstreamError:
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = str(detail.get("message") or text[:300])
        code = str(detail.get("code") or "")
        kind = str(detail.get("type") or "")
    else:
        message, code, kind = (str(detail) if detail else text[:300]), "", ""
    lowered = message.lower()
    if status == 429:
        outcome = pb.OUTCOME_RATE_LIMITED
    elif status in (503, 529) or "overloaded" in kind:
        outcome = pb.OUTCOME_OVERLOADED
    elif status in (401, 403):
        outcome = pb.OUTCOME_AUTH_ERROR
    elif status == 404:
        outcome = pb.OUTCOME_SERVER_ERROR
        message = f"not found (check the deployment's base_url and model): {message}"
    elif code == "context_length_exceeded" or "context length" in lowered or "context window" in lowered:
        outcome = pb.OUTCOME_CONTEXT_WINDOW_EXCEEDED
    elif code in ("content_filter", "content_policy_violation"):
        outcome = pb.OUTCOME_CONTENT_FILTERED
    elif 400 <= status < 500:
        outcome = pb.OUTCOME_BAD_REQUEST
    else:
        outcome = pb.OUTCOME_SERVER_ERROR
    return UpstreamError(outcome, message, status=status)

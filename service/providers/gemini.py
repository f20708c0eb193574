"""Google's Gemini API: generateContent, and streamGenerateContent with `alt=sse`
(https://ai.google.dev/api/generate-content).

What differs from the unified request: roles are `user` and `model`; content is `parts`;
system prompts go in `systemInstruction`; tool calls are `functionCall` parts, answered by
`functionResponse` parts that name the function (Gemini's calls may carry no id, so the
adapter makes one); a prompt or an answer blocked for safety is a content-filter outcome.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from yarl import URL

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import GeminiDeployment
from service.outcomes import Completion, StreamEvent, StreamFinished, UpstreamError, Usage
from service.providers.events import PendingDelta, ServerSentEvent, batched_deltas
from service.providers.http import HttpClient, classified_error, error_body, json_object
from service.providers.translate import merged_turns

# Reasons an answer was withheld for its content (https://ai.google.dev/api/generate-content#FinishReason).
_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"})
_FINISH_REASONS: dict[str, pb.FinishReason] = {
    "STOP": pb.FINISH_REASON_STOP,
    "MAX_TOKENS": pb.FINISH_REASON_LENGTH,
    **dict.fromkeys(_FILTERED, pb.FINISH_REASON_CONTENT_FILTER),
}
_TOOL_MODES = {
    pb.TOOL_CHOICE_MODE_AUTO: "AUTO",
    pb.TOOL_CHOICE_MODE_NONE: "NONE",
    pb.TOOL_CHOICE_MODE_REQUIRED: "ANY",
}


class GeminiProvider:
    def __init__(self, deployment: GeminiDeployment, api_key: str | None) -> None:
        models = URL(str(deployment.base_url).rstrip("/") + f"/{deployment.api_version}/models/")
        self._url = models / f"{deployment.model}:generateContent"
        self._stream_url = (models / f"{deployment.model}:streamGenerateContent").with_query(alt="sse")
        headers = {"x-goog-api-key": api_key} if api_key else {}
        self._client = HttpClient(deployment, headers=headers, http_error=_http_error)
        self._calls_made = 0

    async def complete(self, request: pb.ChatRequest) -> Completion:
        async with self._client.post(self._url, _body(request)) as response:
            raw = await self._client.body(response)
        try:
            data = json.loads(raw)
        except ValueError as error:
            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"unexpected response body: {error!r}") from error
        candidate = _candidate(data)
        texts, calls = self._parts(candidate)
        reason = str(candidate.get("finishReason") or "")
        if reason in _FILTERED and not texts and not calls:
            raise UpstreamError(pb.OUTCOME_CONTENT_FILTERED, f"the answer was withheld: finishReason {reason}")
        return Completion(
            text="".join(texts),
            tool_calls=tuple(pb.ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in calls),
            finish_reason=_finish_reason(reason, bool(calls)),
            usage=_usage(data.get("usageMetadata")),
            provider_request_id=str(data.get("responseId") or ""),
        )

    async def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        state = _StreamState(self._parts)
        stray: list[str] = []
        async with self._client.events(self._stream_url, _body(request), stray) as events:
            async for delta in batched_deltas(events, state.take):
                yield delta
            # Checked inside: a failure after the 200 reports the 200 the upstream sent.
            if not state.reason:
                # It comes as a bare JSON error object after the last event.
                trailer = error_body("\n".join(stray))
                if isinstance(trailer, dict) and isinstance(trailer.get("error"), dict):
                    raise _error(trailer["error"], "\n".join(stray), None)
                raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended before a finishReason")
        yield StreamFinished(
            finish_reason=_finish_reason(state.reason, state.calls_sent > 0),
            usage=state.usage,
            provider_request_id=state.request_id,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _parts(self, candidate: Mapping[str, Any]) -> tuple[list[str], list[pb.ToolCallDelta]]:
        """The text and the function calls of a candidate's parts (thoughts left out)."""
        texts: list[str] = []
        calls: list[pb.ToolCallDelta] = []
        try:
            for part in (candidate.get("content") or {}).get("parts") or ():
                if "text" in part and not part.get("thought"):
                    texts.append(str(part["text"]))
                elif call := part.get("functionCall"):
                    self._calls_made += 1
                    call_id = str(call.get("id") or f"gemini_call_{self._calls_made}")
                    arguments = json.dumps(call.get("args") or {})
                    calls.append(pb.ToolCallDelta(index=len(calls), id=call_id, name=call["name"], arguments=arguments))
        except (KeyError, TypeError, AttributeError) as error:
            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"unexpected content parts: {error!r}") from error
        return texts, calls


class _StreamState:
    """What a stream has said so far: the response id, usage, the finish reason and how many
    function calls came; `parts` reads a candidate's text and calls (the provider's `_parts`)."""

    def __init__(self, parts: Callable[[Mapping[str, Any]], tuple[list[str], list[pb.ToolCallDelta]]]) -> None:
        self.request_id = ""
        self.usage = Usage()
        self.reason = ""
        self.calls_sent = 0
        self._parts = parts

    def take(self, event: ServerSentEvent, pending: PendingDelta) -> None:
        chunk = _parse_chunk(event.data)
        self.request_id = self.request_id or str(chunk.get("responseId") or "")
        if chunk.get("usageMetadata"):
            self.usage = _usage(chunk["usageMetadata"])
        candidate = _candidate(chunk)
        texts, calls = self._parts(candidate)
        pending.texts += texts
        # Gemini sends a function call whole, never in pieces.
        for call in calls:
            call.index = self.calls_sent
            self.calls_sent += 1
            pending.calls.append(call)
        self.reason = str(candidate.get("finishReason") or self.reason)


def _body(request: pb.ChatRequest) -> dict[str, Any]:
    params = request.params
    body: dict[str, Any] = {"contents": _contents(request.messages)}
    system = "\n\n".join(
        part.text for m in request.messages if m.role == pb.ROLE_SYSTEM for part in m.content if part.text
    )
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    config: dict[str, Any] = {}
    for name, field in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("max_tokens", "maxOutputTokens"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if params.HasField(name):
            config[field] = getattr(params, name)
    if params.stop:
        config["stopSequences"] = list(params.stop)
    if request.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        config["responseMimeType"] = "application/json"
    elif request.response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = json_format.MessageToDict(request.response_format.schema)
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in request.tools]}]
    if request.HasField("tool_choice"):
        choice = request.tool_choice
        if choice.WhichOneof("choice") == "tool_name":
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.tool_name]}}
        elif mode := _TOOL_MODES.get(choice.mode):
            body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    return body


def _contents(messages: Sequence[pb.Message]) -> list[dict[str, Any]]:
    """User and model turns; tool results join the user turn after the calls, by function name."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}

    def parts(message: pb.Message) -> list[dict[str, Any]]:
        if message.role == pb.ROLE_TOOL:
            return [_function_response(names.get(message.tool_call_id, ""), message)]
        return [_part(part) for part in message.content] + [
            {"functionCall": {"name": c.name, "args": json.loads(c.arguments or "{}")}} for c in message.tool_calls
        ]

    return merged_turns(messages, parts, assistant="model", key="parts")


def _function_response(name: str, message: pb.Message) -> dict[str, Any]:
    text = "".join(part.text for part in message.content)
    try:
        result = json.loads(text)
    except ValueError:
        result = None
    # The API wants an object; other results are wrapped as the docs' examples do.
    response = result if isinstance(result, dict) else {"result": text}
    return {"functionResponse": {"name": name, "response": response}}


def _part(part: pb.ContentPart) -> dict[str, Any]:
    if part.WhichOneof("part") == "text":
        return {"text": part.text}
    image = part.image
    if image.WhichOneof("source") == "url":
        file_data = {"fileUri": image.url}
        if image.mime_type:
            file_data["mimeType"] = image.mime_type
        return {"fileData": file_data}
    return {"inlineData": {"mimeType": image.mime_type, "data": base64.b64encode(image.data).decode()}}


def _declaration(tool: pb.Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    if tool.parameters.fields:
        declaration["parametersJsonSchema"] = json_format.MessageToDict(tool.parameters)
    return declaration


def _candidate(data: Any) -> Mapping[str, Any]:
    """The first candidate; a prompt blocked for safety is a content-filter failure."""
    if not isinstance(data, dict):
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"response is not an object: {str(data)[:200]!r}")
    candidates = data.get("candidates")
    if candidates:
        first = candidates[0]
        if isinstance(first, dict):
            return first
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"candidate is not an object: {str(first)[:200]!r}")
    blocked = (data.get("promptFeedback") or {}).get("blockReason")
    if blocked:
        raise UpstreamError(pb.OUTCOME_CONTENT_FILTERED, f"the prompt was blocked: blockReason {blocked}")
    return {}


def _finish_reason(reason: str, called: bool) -> pb.FinishReason:
    # Gemini reports STOP after function calls; the unified API says TOOL_CALLS.
    if called and reason == "STOP":
        return pb.FINISH_REASON_TOOL_CALLS
    return _FINISH_REASONS.get(reason, pb.FINISH_REASON_UNSPECIFIED)


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(
        input_tokens=int(raw.get("promptTokenCount") or 0),
        # Thinking tokens are billed as output.
        output_tokens=int(raw.get("candidatesTokenCount") or 0) + int(raw.get("thoughtsTokenCount") or 0),
        cached_input_tokens=int(raw.get("cachedContentTokenCount") or 0),
    )


def _parse_chunk(data: str) -> dict[str, Any]:
    chunk = json_object(data, "stream chunk")
    if isinstance(chunk.get("error"), dict):
        raise _error(chunk["error"], data, None)
    return chunk


def _http_error(status: int, headers: Mapping[str, str], text: str) -> UpstreamError:
    body = error_body(text)
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        return _error(detail, text, headers, status)
    return classified_error(status, text[:300], headers=headers)


def _error(detail: Mapping[str, Any], text: str, headers: Mapping[str, str] | None, status: int = 0) -> UpstreamError:
    status = status or _status_of(detail)
    details = [d for d in detail.get("details") or () if isinstance(d, dict)]
    # Gemini answers a bad key with 400 INVALID_ARGUMENT; it is an auth failure (the status
    # reported stays the 400 it sent).
    auth = any(d.get("reason") == "API_KEY_INVALID" for d in details)
    message = str(detail.get("message") or text[:300])
    return classified_error(
        status,
        message,
        kind=str(detail.get("status") or ""),
        headers=headers,
        outcome=pb.OUTCOME_AUTH_ERROR if auth else None,
        retry_after_s=_retry_delay(details),
    )


def _status_of(detail: Mapping[str, Any]) -> int:
    try:
        return int(detail.get("code") or 500)
    except (TypeError, ValueError):
        return 500


def _retry_delay(details: list[dict[str, Any]]) -> float | None:
    """The wait a 429 asks for, which Gemini puts in its body as google.rpc.RetryInfo
    (`"retryDelay": "2s"`, a protobuf Duration in JSON) rather than in a Retry-After header."""
    for detail in details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = str(detail.get("retryDelay", ""))
            try:
                return max(0.0, float(delay.removesuffix("s"))) if delay.endswith("s") else None
            except ValueError:
                return None
    return None

"""The OpenAI chat completions protocol, spoken by OpenAI, vLLM, Ollama, Groq, Together and others.

Request and response shapes follow https://platform.openai.com/docs/api-reference/chat:
unary answers in `choices[0].message`, streams as server-sent events of
`chat.completion.chunk` objects ending with `data: [DONE]`, usage in the last
chunk when `stream_options.include_usage` is set.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
from google.protobuf import json_format
from yarl import URL

from service.api.switchboard.v1 import gateway_pb2 as pb
from service.config import AzureOpenAIDeployment, OpenAICompatibleDeployment, PooledDeployment
from service.outcomes import Completion, StreamEvent, StreamFinished, UpstreamError, Usage
from service.providers.events import PendingDelta, ServerSentEvent, batched_deltas
from service.providers.http import HttpClient, classified_error, error_body, json_object

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
_OPTIONAL_PARAMS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


class OpenAICompatibleProvider:
    """One deployment of the protocol; `for_deployment` reads how a server differs from OpenAI."""

    def __init__(
        self,
        url: URL,
        headers: dict[str, str],
        *,
        model: str | None,
        pooling: PooledDeployment,
        stream_usage: bool = True,
        max_tokens_field: str = "max_tokens",
    ) -> None:
        self.model = model
        self._url = url
        self._stream_usage = stream_usage
        self._max_tokens_field = max_tokens_field
        self._client = HttpClient(pooling, headers=headers, http_error=_http_error)

    @classmethod
    def for_deployment(
        cls, deployment: OpenAICompatibleDeployment | AzureOpenAIDeployment, api_key: str | None
    ) -> OpenAICompatibleProvider:
        if isinstance(deployment, AzureOpenAIDeployment):
            # The deployment in the path chooses the model, so the body names none.
            path = f"openai/deployments/{deployment.azure_deployment}/chat/completions"
            url = URL(str(deployment.endpoint).rstrip("/") + "/" + path)
            return cls(
                url.with_query({"api-version": deployment.api_version}),
                {"api-key": api_key} if api_key else {},
                model=None,
                pooling=deployment,
                stream_usage=deployment.stream_usage,
            )
        headers = dict(deployment.extra_headers)
        if api_key:
            headers[deployment.api_key_header] = deployment.api_key_prefix + api_key
        return cls(
            URL(str(deployment.base_url).rstrip("/") + "/chat/completions"),
            headers,
            model=deployment.model,
            pooling=deployment,
            stream_usage=deployment.stream_usage,
            max_tokens_field=deployment.max_tokens_field,
        )

    async def complete(self, request: pb.ChatRequest) -> Completion:
        async with self._client.post(self._url, self._body(request, stream=False)) as response:
            raw = await self._client.body(response)
        try:
            data = orjson.loads(raw)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
            tool_calls = tuple(
                pb.ToolCall(id=call["id"], name=call["function"]["name"], arguments=call["function"]["arguments"])
                for call in choice["message"].get("tool_calls") or ()
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"unexpected response body: {error!r}") from error
        return Completion(
            text=text,
            tool_calls=tool_calls,
            finish_reason=_FINISH_REASONS.get(choice.get("finish_reason") or "", pb.FINISH_REASON_UNSPECIFIED),
            usage=_usage(data.get("usage")),
            provider_request_id=str(data.get("id") or ""),
        )

    async def stream(self, request: pb.ChatRequest) -> AsyncGenerator[StreamEvent, None]:
        body = self._body(request, stream=True)
        state = _StreamState()
        async with self._client.events(self._url, body) as events:
            async for delta in batched_deltas(events, state.take, stop=lambda: state.done):
                yield delta
            # Checked inside: a failure after the 200 reports the 200 the upstream sent.
            if not state.done and state.finish_reason is None:
                raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, "stream ended before its finish reason or [DONE]")
        yield StreamFinished(
            finish_reason=state.finish_reason if state.finish_reason is not None else pb.FINISH_REASON_UNSPECIFIED,
            usage=state.usage,
            provider_request_id=state.request_id,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _body(self, request: pb.ChatRequest, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [_message(m) for m in request.messages]}
        if self.model is not None:
            body["model"] = self.model
        params = request.params
        for name in _OPTIONAL_PARAMS:
            if params.HasField(name):
                body[name] = getattr(params, name)
        if params.HasField("max_tokens"):
            body[self._max_tokens_field] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if request.tools:
            body["tools"] = [_tool(tool) for tool in request.tools]
        if request.HasField("tool_choice") and (choice := _tool_choice(request.tool_choice)) is not None:
            body["tool_choice"] = choice
        if (response_format := _response_format(request.response_format)) is not None:
            body["response_format"] = response_format
        if stream:
            body["stream"] = True
            if self._stream_usage:
                body["stream_options"] = {"include_usage": True}
        return body


def _message(message: pb.Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _ROLES[message.role]}
    if not message.content:
        out["content"] = None  # an assistant turn that only called tools
    elif all(part.WhichOneof("part") == "text" for part in message.content):
        out["content"] = "".join(part.text for part in message.content)
    else:
        out["content"] = [_content_part(part) for part in message.content]
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments or "{}"}}
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tool(tool: pb.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.parameters.fields:
        function["parameters"] = json_format.MessageToDict(tool.parameters)
    return {"type": "function", "function": function}


def _tool_choice(choice: pb.ToolChoice) -> str | dict[str, Any] | None:
    if choice.WhichOneof("choice") == "tool_name":
        return {"type": "function", "function": {"name": choice.tool_name}}
    return {
        pb.TOOL_CHOICE_MODE_AUTO: "auto",
        pb.TOOL_CHOICE_MODE_NONE: "none",
        pb.TOOL_CHOICE_MODE_REQUIRED: "required",
    }.get(choice.mode)


def _response_format(response_format: pb.ResponseFormat) -> dict[str, Any] | None:
    if response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_OBJECT:
        return {"type": "json_object"}
    if response_format.type == pb.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema: dict[str, Any] = {
            "name": response_format.name,
            "schema": json_format.MessageToDict(response_format.schema),
        }
        if response_format.strict:
            schema["strict"] = True
        return {"type": "json_schema", "json_schema": schema}
    return None


def _tool_call_delta(call: Any) -> pb.ToolCallDelta:
    if not isinstance(call, dict) or not isinstance(call.get("index"), int):
        raise UpstreamError(pb.OUTCOME_PROTOCOL_ERROR, f"malformed tool call delta: {call!r:.200}")
    function = call.get("function") or {}
    return pb.ToolCallDelta(
        index=call["index"],
        id=call.get("id") or "",
        name=function.get("name") or "",
        arguments=function.get("arguments") or "",
    )


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


class _StreamState:
    """What a stream has said so far: the request id, usage, the finish reason, whether [DONE] came."""

    def __init__(self) -> None:
        self.request_id = ""
        self.usage = Usage()
        self.finish_reason: pb.FinishReason | None = None
        self.done = False

    def take(self, event: ServerSentEvent, pending: PendingDelta) -> None:
        if self.done:
            return  # what follows [DONE] in the same read is not part of the stream
        if event.data == "[DONE]":
            self.done = True
            return
        chunk = _parse_chunk(event.data)
        if not self.request_id:
            self.request_id = str(chunk.get("id") or "")
        if usage := chunk.get("usage"):
            self.usage = _usage(usage)
        for choice in chunk.get("choices") or ():
            if delta := choice.get("delta"):
                if text := delta.get("content"):
                    pending.texts.append(text)
                for call in delta.get("tool_calls") or ():
                    piece = _tool_call_delta(call)
                    if piece.id or piece.name:
                        pending.calls.append(piece)
                    else:
                        pending.add_arguments(piece.index, piece.arguments)
            if reason := choice.get("finish_reason"):
                self.finish_reason = _FINISH_REASONS.get(reason, pb.FINISH_REASON_UNSPECIFIED)


def _parse_chunk(data: str) -> dict[str, Any]:
    chunk = json_object(data, "stream chunk")
    if "error" in chunk:
        # Servers report failures after the 200 header as an error event.
        raise _error_from_body(500, chunk, data)
    return chunk


def _http_error(status: int, headers: Mapping[str, str], text: str) -> UpstreamError:
    return _error_from_body(status, error_body(text), text, headers)


def _error_from_body(status: int, body: Any, text: str, headers: Mapping[str, str] | None = None) -> UpstreamError:
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        message = str(detail.get("message") or text[:300])
        return classified_error(
            status, message, kind=str(detail.get("type") or ""), code=str(detail.get("code") or ""), headers=headers
        )
    return classified_error(status, str(detail) if detail else text[:300], headers=headers)

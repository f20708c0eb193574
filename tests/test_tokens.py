"""The input-token estimate: router_core.estimate_tokens, and service.tokens gathering a request's texts."""

from __future__ import annotations

import pytest
from google.protobuf import struct_pb2

import router_core
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.tokens import estimate_input_tokens

# (text, cl100k_base's count, o200k_base's count), counted with tiktoken.
COUNTED = [
    ("The quick brown fox jumps over the lazy dog.", 10, 10),
    ('{"name": "get_weather", "city": "Paris"}', 13, 13),
    ("def add(a, b):\n    return a + b\n", 12, 12),
    ("今天天气很好，我们去公园散步吧。", 20, 12),  # noqa: RUF001 (Chinese punctuation)
]


@pytest.mark.parametrize(("text", "cl100k", "o200k"), COUNTED)
def test_estimate_is_near_the_tokenizers(text: str, cl100k: int, o200k: int) -> None:
    assert min(cl100k, o200k) - 1 <= router_core.estimate_tokens([text]) <= max(cl100k, o200k) + 1


def test_messages_and_images_add_fixed_costs() -> None:
    assert router_core.estimate_tokens([]) == 0
    assert router_core.estimate_tokens(["Hello, world!"], messages=2, images=1) == 4 + 2 * 4 + 765


def test_estimate_takes_a_sequence_of_texts_not_a_text() -> None:
    with pytest.raises(TypeError):
        router_core.estimate_tokens("Hello")
    with pytest.raises(OverflowError):
        router_core.estimate_tokens([], messages=-1)


def test_large_conversations_are_estimated_too() -> None:
    # Past the size from which the GIL is released.
    paragraph = "Because the loop body never runs, the function returns None. " * 100
    one = router_core.estimate_tokens([paragraph])
    assert router_core.estimate_tokens([paragraph] * 10) == pytest.approx(10 * one, abs=1)


def text(value: str) -> pb.ContentPart:
    return pb.ContentPart(text=value)


def test_request_texts_images_and_messages_are_counted() -> None:
    messages = [
        pb.Message(role=pb.ROLE_SYSTEM, content=[text("Be brief.")]),
        pb.Message(
            role=pb.ROLE_USER,
            name="ada",
            content=[text("What is in this picture?"), pb.ContentPart(image=pb.ImagePart(url="https://x/y.png"))],
        ),
    ]
    expected = router_core.estimate_tokens(["Be brief.", "ada", "What is in this picture?"], messages=2, images=1)
    assert estimate_input_tokens(messages) == expected


def test_tool_calls_and_tool_definitions_cost_prompt_tokens() -> None:
    call = pb.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        pb.Message(role=pb.ROLE_USER, content=[text("Weather in Paris?")]),
        pb.Message(role=pb.ROLE_ASSISTANT, tool_calls=[call]),
    ]
    parameters = struct_pb2.Struct()
    # One key a level: a Struct's JSON does not promise the order of keys.
    parameters.update({"properties": {"city": {"type": "string"}}})
    tool = pb.Tool(name="get_weather", description="Current weather for a city.", parameters=parameters)
    without_tools = estimate_input_tokens(messages)
    assert without_tools == router_core.estimate_tokens(
        ["Weather in Paris?", "get_weather", '{"city": "Paris"}'], messages=2
    )
    schema = '{"properties": {"city": {"type": "string"}}}'
    with_tools = estimate_input_tokens(messages, [tool])
    assert with_tools == router_core.estimate_tokens(
        ["Weather in Paris?", "get_weather", '{"city": "Paris"}', "get_weather", "Current weather for a city.", schema],
        messages=2,
    )
    assert with_tools > without_tools + 15

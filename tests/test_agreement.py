"""Comparing a shadow deployment's answer with the primary's (service/agreement.py)."""

from __future__ import annotations

import pytest

from service.agreement import MAX_COMPARED_CHARS, SIMILAR_ENOUGH, Answer, ToolUse, compare_answers
from service.api.switchboard.v1 import gateway_pb2 as pb
from service.outcomes import Completion, Usage


def test_identical_answers_agree_exactly() -> None:
    answer = Answer("Paris is the capital of France.")
    agreement = compare_answers(answer, Answer("  Paris is the capital of France.\n"))
    assert agreement.exact
    assert agreement.similarity == 1.0
    assert agreement.json_equal is None
    assert agreement.tools_equal is None
    assert agreement.agrees


def test_case_punctuation_and_spacing_are_set_aside() -> None:
    agreement = compare_answers(Answer("Paris is the capital of France."), Answer("paris  is the\ncapital of FRANCE!"))
    assert not agreement.exact
    assert agreement.similarity == 1.0
    assert agreement.agrees


def test_unicode_variants_are_folded() -> None:
    # Full-width letters and the German sharp s fold to their plain forms.
    agreement = compare_answers(Answer("\uff21\uff22\uff23 Stra\u00dfe"), Answer("abc STRASSE"))
    assert agreement.similarity == 1.0


def test_a_different_answer_does_not_agree() -> None:
    agreement = compare_answers(
        Answer("Paris is the capital of France."), Answer("I cannot help with that request, sorry.")
    )
    assert not agreement.exact
    assert agreement.similarity < SIMILAR_ENOUGH - 0.3
    assert not agreement.agrees


def test_two_empty_answers_agree() -> None:
    agreement = compare_answers(Answer(""), Answer(""))
    assert agreement.similarity == 1.0
    assert agreement.exact
    assert agreement.agrees


def test_json_with_reordered_keys_and_other_spacing_agrees() -> None:
    agreement = compare_answers(
        Answer('{"city": "Paris", "population": 2100000, "tags": ["capital", "river"]}'),
        Answer('{\n  "tags": ["capital","river"],\n  "population": 2100000.0,\n  "city": "Paris"\n}'),
    )
    assert not agreement.exact
    assert agreement.json_equal is True
    assert agreement.agrees


def test_json_with_a_different_value_does_not_agree() -> None:
    agreement = compare_answers(
        Answer('{"city": "Paris", "population": 2100000}'), Answer('{"city": "Paris", "population": 2100001}')
    )
    # Textually close, but JSON decides.
    assert agreement.similarity >= SIMILAR_ENOUGH
    assert agreement.json_equal is False
    assert not agreement.agrees


def test_fenced_json_equals_bare_json() -> None:
    fenced = Answer('```json\n{"a": [1, 2], "b": null}\n```')
    assert compare_answers(fenced, Answer('{"b": null, "a": [1, 2]}')).json_equal is True
    assert compare_answers(Answer("```\n[1, 2]\n```"), Answer("[1,2]")).json_equal is True


def test_bare_scalars_and_prose_are_text_not_json() -> None:
    assert compare_answers(Answer("42"), Answer("42.0")).json_equal is None
    assert compare_answers(Answer('{"a": 1}'), Answer("a is 1")).json_equal is None
    assert compare_answers(Answer("[NaN]"), Answer("[NaN]")).json_equal is None


def test_same_tool_with_equivalent_arguments_agrees() -> None:
    primary = Answer("", (ToolUse("get_weather", '{"city": "Paris", "unit": "C"}'),))
    shadow = Answer("Let me check.", (ToolUse("get_weather", '{"unit":"C","city":"Paris"}'),))
    agreement = compare_answers(primary, shadow)
    assert agreement.tools_equal is True
    assert agreement.agrees
    assert not agreement.exact


def test_a_different_tool_or_arguments_does_not_agree() -> None:
    primary = Answer("", (ToolUse("get_weather", '{"city": "Paris"}'),))
    other_tool = Answer("", (ToolUse("get_time", '{"city": "Paris"}'),))
    other_arguments = Answer("", (ToolUse("get_weather", '{"city": "Lyon"}'),))
    for shadow in (other_tool, other_arguments):
        agreement = compare_answers(primary, shadow)
        assert agreement.tools_equal is False
        assert not agreement.agrees


def test_tool_calls_are_compared_in_order_and_count() -> None:
    a, b = ToolUse("a", "{}"), ToolUse("b", "{}")
    assert compare_answers(Answer("", (a, b)), Answer("", (a, b))).tools_equal is True
    assert compare_answers(Answer("", (a, b)), Answer("", (b, a))).tools_equal is False
    assert compare_answers(Answer("", (a, b)), Answer("", (a,))).tools_equal is False


def test_unparseable_arguments_are_compared_as_text() -> None:
    call = ToolUse("run", "{not json")
    assert compare_answers(Answer("", (call,)), Answer("", (ToolUse("run", " {not json "),))).tools_equal is True
    assert compare_answers(Answer("", (call,)), Answer("", (ToolUse("run", "{not JSON"),))).tools_equal is False


def test_tools_on_one_side_only_do_not_agree() -> None:
    called = Answer("Paris", (ToolUse("get_weather", '{"city": "Paris"}'),))
    agreement = compare_answers(called, Answer("Paris"))
    assert agreement.tools_equal is False
    assert not agreement.agrees
    assert agreement.similarity == 1.0  # the texts alone would have agreed


def test_deeply_nested_json_does_not_raise() -> None:
    over_the_bound = "[" * 100_000
    within_the_bound = "[" * (MAX_COMPARED_CHARS // 2) + "]" * (MAX_COMPARED_CHARS // 2)
    for text in (over_the_bound, within_the_bound):
        agreement = compare_answers(Answer(text), Answer(text))
        assert agreement.json_equal is None
        assert agreement.exact
        call = ToolUse("lookup", text)
        assert compare_answers(Answer("", (call,)), Answer("", (call,))).tools_equal is True


@pytest.mark.timeout(60)  # a comparison growing with the whole texts' product would take minutes
def test_texts_beyond_the_bound_are_compared_on_their_start() -> None:
    words = "the quick brown fox jumps over the lazy dog "
    text = (words * (200_000 // len(words) + 1))[:200_000]
    same = compare_answers(Answer(text), Answer(text))
    # Different only past the bound: exactness sees the whole text, similarity the start.
    tail_differs = compare_answers(Answer(text), Answer(text[:MAX_COMPARED_CHARS] + "x" * 150_000))
    unlike = compare_answers(Answer("ab" * 100_000), Answer("cd" * 100_000))
    assert same.exact and same.similarity == 1.0 and same.agrees
    assert not tail_differs.exact and tail_differs.similarity == 1.0
    assert unlike.similarity == 0.0 and not unlike.agrees


def test_json_beyond_the_bound_is_not_parsed() -> None:
    document = "[" + ",".join(["1"] * MAX_COMPARED_CHARS) + "]"
    agreement = compare_answers(Answer(document), Answer(document))
    assert agreement.json_equal is None
    assert agreement.agrees


def test_answer_of_a_completion() -> None:
    completion = Completion(
        "Checking.",
        pb.FINISH_REASON_TOOL_CALLS,
        Usage(),
        tool_calls=(pb.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),),
    )
    answer = Answer.of_completion(completion)
    assert answer == Answer("Checking.", (ToolUse("get_weather", '{"city": "Paris"}'),))
    # Providers make up their own call ids: the same call under another id is the same answer.
    other = Completion(
        "Checking.",
        pb.FINISH_REASON_TOOL_CALLS,
        Usage(),
        tool_calls=(pb.ToolCall(id="toolu_9", name="get_weather", arguments='{"city": "Paris"}'),),
    )
    assert compare_answers(answer, Answer.of_completion(other)).exact

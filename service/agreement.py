"""Whether a shadow deployment's answer agrees with the answer the caller got.

Two answers are compared by four measures, and one verdict is drawn from them:

- **exact**: the texts are the same once surrounding whitespace is stripped, and the tool calls
  are the same (the same tools, in the same order, with the same argument text).
- **similarity**: how close the texts are, from 0 (nothing in common) to 1 (the same), once case,
  punctuation, Unicode variants (full-width letters, ligatures) and runs of whitespace are set
  aside. It is the normalised Indel similarity: one minus the share of characters that must be
  inserted or deleted to turn one text into the other. It measures wording, not meaning: a changed
  number in a long answer still scores high.
- **json_equal**: when both texts are JSON objects or arrays (a surrounding Markdown code fence
  allowed), whether they hold the same data: key order, spacing and 1 against 1.0 do not count.
  None when either text is not such JSON; a bare number or string counts as text.
- **tools_equal**: when either side called tools, whether both called the same tools in the same
  order with the same arguments, compared as JSON data where they parse and as text where they
  do not. None when neither side called a tool.
- **agrees**, the verdict the agreement rate counts: the tool calls decide when there are any,
  then the JSON when both texts are JSON, and otherwise a similarity of at least SIMILAR_ENOUGH.

The answers come from upstream models, so the work is bounded: similarity is measured on the
first MAX_COMPARED_CHARS characters of each text, and a text or tool argument longer than that
is not parsed as JSON. JSON nested too deeply for the parser counts as not JSON.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from service.outcomes import Completion

# After normalisation, 0.9 still lets through the small differences the normaliser does not
# remove (a dropped article, a British spelling, a word swapped for a synonym in a paragraph),
# while a reworded or different answer usually falls below it. It errs towards calling answers
# different: a shadow whose agreement rate looks high should really answer alike.
SIMILAR_ENOUGH = 0.9

# The most characters of a text that are measured or parsed: comparing two texts takes time
# that grows with the product of their lengths, and the answers' lengths are an upstream's to
# choose. Ten thousand characters (a few pages) compare in a few milliseconds.
MAX_COMPARED_CHARS = 10_000

_FENCE = "```"


@dataclass(frozen=True, slots=True)
class ToolUse:
    """One tool call of an answer: the tool's name and the JSON text of its arguments."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """What a deployment answered: its text and its tool calls, in order."""

    text: str
    tool_calls: tuple[ToolUse, ...] = ()

    @classmethod
    def of_completion(cls, completion: Completion) -> Answer:
        # Call ids are left out: each provider makes up its own, so they never match.
        return cls(completion.text, tuple(ToolUse(call.name, call.arguments) for call in completion.tool_calls))


@dataclass(frozen=True, slots=True)
class Agreement:
    """The measures of two answers' agreement and the verdict (the module's docstring says what each means)."""

    exact: bool
    similarity: float
    json_equal: bool | None
    tools_equal: bool | None
    agrees: bool


def compare_answers(primary: Answer, shadow: Answer) -> Agreement:
    """How far the shadow's answer agrees with the primary's (see the module's docstring)."""
    exact = primary.text.strip() == shadow.text.strip() and primary.tool_calls == shadow.tool_calls
    similarity = _similarity(primary.text, shadow.text)
    json_equal = _json_equal(primary.text, shadow.text)
    tools_equal = _tools_equal(primary.tool_calls, shadow.tool_calls)
    if tools_equal is not None:
        agrees = tools_equal
    elif json_equal is not None:
        agrees = json_equal
    else:
        agrees = similarity >= SIMILAR_ENOUGH
    return Agreement(exact, similarity, json_equal, tools_equal, agrees)


def _similarity(a: str, b: str) -> float:
    a, b = _normalise(a), _normalise(b)
    # Two texts with nothing left to compare (empty, or all punctuation) are the same.
    return fuzz.ratio(a, b) / 100 if a or b else 1.0


def _normalise(text: str) -> str:
    # NFKC folds compatibility variants (full-width letters, ligatures) into their plain forms,
    # and may lengthen the text: it is cut again afterwards.
    text = unicodedata.normalize("NFKC", text[:MAX_COMPARED_CHARS]).casefold()
    return " ".join(text.translate(_PUNCTUATION).split())[:MAX_COMPARED_CHARS]


class _Punctuation(dict[int, int | None]):
    """A `str.translate` table deleting punctuation (Unicode categories P*). A character's
    category is looked up once and remembered, for the characters below REMEMBERED_BELOW (the
    alphabets most text is in; the table's size stays bounded whatever an upstream sends), so
    that most text is translated in C."""

    def __missing__(self, code: int) -> int | None:
        value = None if unicodedata.category(chr(code)).startswith("P") else code
        if code < REMEMBERED_BELOW:
            self[code] = value
        return value


REMEMBERED_BELOW = 0x3000
_PUNCTUATION = _Punctuation()


def _json_equal(a: str, b: str) -> bool | None:
    da, db = _json_document(_unfenced(a)), _json_document(_unfenced(b))
    if da is None or db is None:
        return None
    return _same_data(da, db)


def _tools_equal(a: tuple[ToolUse, ...], b: tuple[ToolUse, ...]) -> bool | None:
    if not a and not b:
        return None
    return len(a) == len(b) and all(
        x.name == y.name and _same_arguments(x.arguments, y.arguments) for x, y in zip(a, b, strict=True)
    )


def _same_arguments(a: str, b: str) -> bool:
    da, db = _json_document(a), _json_document(b)
    if da is None or db is None:
        return a.strip() == b.strip()
    return _same_data(da, db)


def _same_data(a: dict[str, Any] | list[Any], b: dict[str, Any] | list[Any]) -> bool:
    try:
        return a == b
    except RecursionError:
        # Parsed, but too deep to compare from here: not counted as agreeing.
        return False


def _json_document(text: str) -> dict[str, Any] | list[Any] | None:
    """The JSON object or array `text` holds; None when it is anything else, too long to parse,
    or nested deeper than the parser goes."""
    if len(text) > MAX_COMPARED_CHARS:
        return None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and NaN is unequal to itself: two identical texts holding
    # it would never agree.
    raise ValueError(f"{name} is not JSON")


def _unfenced(text: str) -> str:
    """`text` without a Markdown code fence around the whole of it (```json … ```), which models
    often wrap JSON in."""
    text = text.strip()
    if len(text) < 2 * len(_FENCE) or not (text.startswith(_FENCE) and text.endswith(_FENCE)):
        return text
    inner = text[len(_FENCE) : -len(_FENCE)]
    info, newline, body = inner.partition("\n")
    # The first line names the language ("json", or nothing); a fence on one line has no such name.
    if newline and (not info.strip() or info.strip().replace("-", "").isalnum()):
        return body
    return inner

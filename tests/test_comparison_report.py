"""The comparison report (service/comparison_report.py) written as HTML, PNG and SVG from hand-built responses."""

from __future__ import annotations

import datetime
import math
import pathlib
import sys
import xml.etree.ElementTree as ET

import pytest

from service import comparison_report as report
from service.api.switchboard.admin.v1 import admin_pb2

BOUNDS = [25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0]
AT = datetime.datetime(2025, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)
METHOD = "95% intervals: Wilson's score interval for the success rate."
D = report.DASH  # between an interval's ends
HOSTILE = "<script>alert(1)</script> $x$ and $"


def interval(estimate: float, low: float, high: float) -> admin_pb2.Interval:
    return admin_pb2.Interval(estimate=estimate, low=low, high=high)


def histogram(*counts: int) -> admin_pb2.Histogram:
    assert len(counts) == len(BOUNDS) + 1
    return admin_pb2.Histogram(bounds=BOUNDS, counts=counts)


def side(deployment: str, name: str = "", *, fast: bool = True, **fields: object) -> admin_pb2.ComparedDeployment:
    # Calls per bucket of BOUNDS, the last above them all: a fast side and one about twice as slow.
    if fast:
        latency = histogram(0, 2, 40, 310, 420, 150, 50, 15, 8, 5)
        ttft = histogram(3, 60, 300, 420, 150, 40, 15, 5, 2, 5)
    else:
        latency = histogram(0, 0, 5, 90, 380, 360, 110, 30, 12, 13)
        ttft = histogram(0, 8, 90, 380, 400, 90, 20, 6, 3, 3)
    result = admin_pb2.ComparedDeployment(
        deployment=deployment,
        side=name,
        calls=1000,
        success_rate=interval(0.970, 0.958, 0.979),
        latency_p50_ms=interval(412.0, 398.0, 430.0),
        latency_p95_ms=interval(1510.0, 1380.0, 1700.0),
        ttft_p50_ms=interval(180.0, 171.0, 190.0),
        ttft_p95_ms=interval(520.0, 480.0, 560.0),
        cost_per_call_usd=interval(0.00123, 0.00118, 0.00129),
        cost_per_1k_output_usd=interval(0.0061, 0.0059, 0.0064),
        latency_ms=latency,
        ttft_ms=ttft,
    )
    for key, value in fields.items():
        if isinstance(value, admin_pb2.Interval):
            getattr(result, key).CopyFrom(value)
        elif isinstance(value, list):
            getattr(result, key).extend(value)
        else:
            setattr(result, key, value)
    return result


def by_policy() -> admin_pb2.CompareDeploymentsResponse:
    experiment = admin_pb2.Comparison(
        kind="experiment",
        title="experiment ab-1",
        sides=[
            side("openai-gpt4o", "control", feedback_score=interval(0.81, 0.78, 0.84), scored_calls=120),
            side(
                "anthropic-sonnet+bedrock-sonnet",
                "candidate",
                fast=False,
                cost_per_call_usd=interval(0.00076, 0.00072, 0.00080),
                verdict=["candidate is 38% cheaper per call", "candidate is 41% slower at p95"],
            ),
        ],
    )
    shadow = admin_pb2.Comparison(
        kind="shadow",
        title="shadow b on policy p",
        sides=[
            side("openai-gpt4o", "primary"),
            side(
                "local-llama",
                "shadow",
                fast=False,
                agreement_rate=interval(0.91, 0.882, 0.933),
                compared_answers=540,
                verdict=["shadow agrees with the primary on 91% of answers"],
            ),
        ],
    )
    return admin_pb2.CompareDeploymentsResponse(method=METHOD, comparisons=[experiment, shadow])


def by_deployments(*extra: admin_pb2.ComparedDeployment) -> admin_pb2.CompareDeploymentsResponse:
    return admin_pb2.CompareDeploymentsResponse(
        method=METHOD,
        deployments=[side("openai-gpt4o"), side("groq-llama", fast=False, verdict=["groq-llama is faster"]), *extra],
    )


def write_html(response: admin_pb2.CompareDeploymentsResponse, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "report.html"
    report.render(response, path, title="Weekly comparison", generated_at=AT)
    return path.read_text(encoding="utf-8")


def test_html_shows_every_side_verdict_and_method(tmp_path: pathlib.Path) -> None:
    page = write_html(by_policy(), tmp_path)
    for name in ("control", "candidate", "primary", "shadow: local-llama", "anthropic-sonnet+bedrock-sonnet"):
        assert f"<td>{name}</td>" in page
    for heading in ("experiment ab-1", "shadow b on policy p"):
        assert f"<h2>{heading}</h2>" in page
    assert "candidate is 38% cheaper per call; candidate is 41% slower at p95" in page
    assert "shadow agrees with the primary on 91% of answers" in page
    assert "Wilson&#x27;s score interval" in page
    assert "2025-03-04T05:06:07+00:00" in page
    assert page.count("<svg") == 2  # one figure per comparison
    assert "<script" not in page.lower()
    for fetch in ("<link", "src=", 'href="http', "@import", "url(http"):
        assert fetch not in page


def test_html_formats_intervals(tmp_path: pathlib.Path) -> None:
    page = write_html(by_policy(), tmp_path)
    assert f"412 ms (398{D}430)" in page
    assert f"97.0% (95.8{D}97.9)" in page
    assert f"$0.00123 (0.00118{D}0.00129)" in page
    assert f"0.81 (0.78{D}0.84) · 120 scored" in page
    assert f"91.0% (88.2{D}93.3) · 540 pairs" in page
    assert "<td>—</td>" in page  # the candidate has no feedback score


def test_plain_deployments_are_one_comparison(tmp_path: pathlib.Path) -> None:
    page = write_html(by_deployments(), tmp_path)
    assert "<h2>deployments</h2>" in page
    assert "<td>openai-gpt4o</td>" in page and "<td>groq-llama</td>" in page
    assert "groq-llama is faster" in page
    assert page.count("<svg") == 1
    assert "agreement" not in page  # no shadow side, no agreement column


def test_hostile_names_are_escaped_and_bounded(tmp_path: pathlib.Path) -> None:
    strange = side(HOSTILE, verdict=[HOSTILE, "x" * 5000])
    page = write_html(by_deployments(strange), tmp_path)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; $x$ and $" in page
    assert "x" * 200 not in page and "x" * 199 + "…" in page
    for fmt in ("png", "svg"):
        report.render(by_deployments(strange), tmp_path / f"hostile.{fmt}", title=HOSTILE, generated_at=AT)


def test_title_is_escaped(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "report.html"
    report.render(by_deployments(), path, title=HOSTILE, generated_at=AT)
    assert "<script>" not in path.read_text(encoding="utf-8")


def test_png_holds_every_comparison(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "report.png"
    report.render(by_policy(), path, title="t", generated_at=AT)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_svg_parses_and_names_no_date(tmp_path: pathlib.Path) -> None:
    # (Not byte for byte repeatable: the layout of a process's first figure can differ in the
    # last decimals, as its fonts are first measured.)
    path = tmp_path / "a.svg"
    report.render(by_policy(), path, title="t", generated_at=AT)
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert b"<dc:date>" not in path.read_bytes()


def test_other_suffixes_are_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"\.html, \.png, \.svg"):
        report.render(by_policy(), tmp_path / "report.txt", title="t", generated_at=AT)
    assert not (tmp_path / "report.txt").exists()


@pytest.mark.parametrize("suffix", [".html", ".png", ".svg"])
def test_open_and_missing_intervals_do_not_break(tmp_path: pathlib.Path, suffix: str) -> None:
    single = admin_pb2.ComparedDeployment(
        deployment="one-call",
        calls=1,
        success_rate=interval(1.0, -math.inf, math.inf),
        latency_p95_ms=interval(640.0, -math.inf, math.inf),
        cost_per_call_usd=interval(0.002, math.nan, math.inf),
        latency_ms=admin_pb2.Histogram(bounds=BOUNDS, counts=[0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
    )
    empty = admin_pb2.ComparedDeployment(deployment="no-calls")
    path = tmp_path / f"report{suffix}"
    report.render(by_deployments(single, empty), path, title="t", generated_at=AT)
    assert path.stat().st_size > 0
    if suffix == ".html":
        page = path.read_text(encoding="utf-8")
        assert f"100.0% (-∞{D}∞)" in page
        assert f"$0.00200 (?{D}∞)" in page


def test_nothing_to_compare_still_renders(tmp_path: pathlib.Path) -> None:
    page = write_html(admin_pb2.CompareDeploymentsResponse(), tmp_path)
    assert "<h2>deployments</h2>" in page and page.count("<svg") == 1


def test_naive_time_is_taken_as_utc(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "report.html"
    report.render(by_deployments(), path, title="t", generated_at=AT.replace(tzinfo=None))
    assert "2025-03-04T05:06:07+00:00" in path.read_text(encoding="utf-8")


def test_missing_matplotlib_names_the_extra(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(RuntimeError, match=r"pip install 'switchboard\[report\]'"):
        report.render(by_policy(), tmp_path / "report.html", title="t", generated_at=AT)

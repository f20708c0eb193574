"""Configuration: validation messages with lines, API keys from the environment, the embedded default."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import router_core
from service.config import ConfigError, load_config, parse_config

DEPLOYMENT = """
model_groups:
  - name: g
    deployments:
      - id: d1
        type: openai_compatible
        model: m
        base_url: http://127.0.0.1:9/v1
        api_key_env: TEST_KEY
        context_window: 1000
"""


def test_embedded_default_serves_echo_offline() -> None:
    config = load_config(None, environ={})
    assert [g.name for g in config.model_groups] == ["echo"]
    assert config.default_group == "echo"
    assert config.server.listen == "127.0.0.1:50051"


def test_embedded_default_enables_providers_whose_key_is_set() -> None:
    config = load_config(None, environ={"OPENAI_API_KEY": "sk-x"})
    assert [g.name for g in config.model_groups] == ["echo", "gpt-4o-mini"]


def test_errors_name_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "model_groups:\n"
        "  - name: g\n"
        "    deployments:\n"
        "      - id: d\n"
        "        type: openai_compatible\n"
        "        model: m\n"
        "        context_window: -1\n"
        "        colour: blue\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert (
        f"{path}:7: model_groups[0].deployments[0].context_window: invalid value: integer `-1`, expected u32" in message
    )
    assert f"{path}:8: model_groups[0].deployments[0].colour: Extra inputs are not permitted" in message
    assert f"{path}:4: model_groups[0].deployments[0].base_url: Field required" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("model_groups: []", "c.yaml:1: model_groups: must not be empty"),
        ("default_group: nope\n" + DEPLOYMENT, 'c.yaml:1: default_group: unknown model group "nope"'),
        (
            DEPLOYMENT + "  - name: g\n    deployments: [d1]\n",
            'c.yaml:11: model_groups[1].name: duplicate model group "g"',
        ),
        (DEPLOYMENT.replace("name: g", "name: auto"), 'c.yaml:3: model_groups[0].name: "auto" is reserved'),
        (
            DEPLOYMENT.replace("id: d1", "id: -d1"),
            'c.yaml:5: model_groups[0].deployments[0].id: "-d1" is not a valid name',
        ),
        ("{}", "c.yaml:1: (top level): missing field `model_groups`"),
        ("colour: blue\n" + DEPLOYMENT, "c.yaml:1: colour: Extra inputs are not permitted"),
        (DEPLOYMENT.replace("openai_compatible", "carrier_pigeon"), "does not match any of the expected tags"),
        ("- just a list", "expected a mapping at the top level"),
        ("model_groups: [", "invalid YAML"),
    ],
)
def test_invalid_configs_are_explained(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config(text, "c.yaml")
    assert says in str(caught.value)


def test_missing_api_key_is_an_error_unless_skippable(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(DEPLOYMENT)
    with pytest.raises(ConfigError, match="environment variable TEST_KEY is not set"):
        load_config(path, environ={})
    assert load_config(path, environ={"TEST_KEY": "k"}).deployments()[0].id == "d1"
    path.write_text(DEPLOYMENT + "        skip_without_key: true\n")
    with pytest.raises(ConfigError, match="no deployment is usable"):
        load_config(path, environ={})


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_the_routing_document_carries_only_routing_keys() -> None:
    config = parse_config(DEPLOYMENT)
    routing = json.loads(config.routing_document)
    assert routing["model_groups"] == [{"name": "g", "deployments": ["d1"]}]
    assert routing["deployments"] == [{"id": "d1", "context_window": 1000}]
    assert set(router_core.DEPLOYMENT_KEYS) >= set(routing["deployments"][0])


def test_the_core_fills_in_the_routing_defaults() -> None:
    [deployment] = parse_config(DEPLOYMENT).deployments()
    assert (deployment.region, deployment.capabilities, deployment.weight, deployment.priority) == (
        "unspecified",
        ("streaming",),
        1.0,
        0,
    )
    assert (deployment.input_price_per_mtok, deployment.output_price_per_mtok, deployment.rpm) == (0.0, 0.0, None)


@pytest.mark.parametrize(
    ("value", "says"),
    [(".inf", 'invalid type: string "inf", expected f64'), ("0", "must be a finite number > 0, got 0")],
)
def test_a_routing_value_is_checked_once_by_the_core_and_reported_at_its_line(value: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(DEPLOYMENT + f"        weight: {value}\n", "c.yaml")
    assert str(caught.value) == f"invalid configuration:\n  c.yaml:11: model_groups[0].deployments[0].weight: {says}"


STRATEGIES = [
    "weighted",
    "priority",
    "round_robin",
    "least_in_flight",
    "lowest_cost",
    "lowest_latency",
    "usage_headroom",
    "balanced",
]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_of_the_core_can_order_a_group(strategy: str) -> None:
    config = parse_config(DEPLOYMENT.replace("  - name: g\n", f"  - name: g\n    strategy: {strategy}\n"))
    assert config.model_groups[0].strategy == strategy
    assert config.new_router().route("g", dry_run=True).strategy == strategy


SHARED = """
default_group: chat
deployments:
  - {id: shared, type: echo, model: e, context_window: 1000}
model_groups:
  - name: chat
    deployments:
      - shared
      - {id: own, type: echo, model: e, context_window: 1000, weight: 2}
  - name: batch
    strategy: lowest_cost
    deployments: [shared, own]
"""


def test_a_deployment_may_belong_to_several_groups() -> None:
    config = parse_config(SHARED)
    assert [(g.name, [d.id for d in g.deployments]) for g in config.model_groups] == [
        ("chat", ["shared", "own"]),
        ("batch", ["shared", "own"]),
    ]
    assert [d.id for d in config.deployments()] == ["shared", "own"]
    assert config.new_router().model_groups() == {"chat": ["shared", "own"], "batch": ["shared", "own"]}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            ("  - shared\n", "  - elsewhere\n"),
            'c.yaml:8: model_groups[0].deployments[0]: unknown deployment "elsewhere"',
        ),
        (
            ("context_window: 1000}\nmodel", "context_window: 0}\nmodel"),
            "c.yaml:4: deployments[0].context_window: must be > 0, got 0",
        ),
        (("id: own,", "id: shared,"), 'c.yaml:9: model_groups[0].deployments[1].id: duplicate deployment id "shared"'),
        (
            ("[shared, own]", "[shared, 7]"),
            "c.yaml:12: model_groups[1].deployments[1]: invalid type: integer `7`, expected a string",
        ),
        (
            ("model: e, context_window: 1000, weight", "context_window: 1000, weight"),
            "c.yaml:9: model_groups[0].deployments[1].model: Field required",
        ),
    ],
)
def test_mistakes_in_shared_deployments_name_the_place_in_the_file(change: tuple[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(SHARED.replace(*change), "c.yaml")
    assert says in str(caught.value)


POLICIES = (
    DEPLOYMENT
    + """  - name: h
    deployments:
      - id: d2
        type: echo
        model: e
        context_window: 1000
policies:
  - id: to-g
    when: {field: task, eq: code}
    route_to: {groups: [g]}
    fallback: [{groups: [h]}]
  - id: to-h
    route_to: {groups: [h]}
"""
)


def test_policy_errors_from_the_core_name_key_and_line() -> None:
    broken = POLICIES.replace("when: {field: task, eq: code}", "when:\n      field: task\n      gt: 3")
    with pytest.raises(ConfigError) as caught:
        parse_config(broken, "p.yaml")
    assert "p.yaml:21: policies[0].when.gt: does not apply to a text field" in str(caught.value)
    with pytest.raises(ConfigError, match=r"p.yaml:\d+: policies\[1\].route_to.groups\[0\]: unknown model group"):
        parse_config(POLICIES.replace("route_to: {groups: [h]}", "route_to: {groups: [nope]}"), "p.yaml")


def test_skipped_deployments_leave_the_policies_that_name_them() -> None:
    path_text = POLICIES.replace("api_key_env: TEST_KEY", "api_key_env: TEST_KEY\n        skip_without_key: true")
    config = parse_config(path_text)
    from service.config import resolve_environment

    resolved = resolve_environment(config, environ={})
    assert [p["id"] for p in resolved.policies] == ["to-h"]
    assert resolved.left_out == ("d1",)
    assert resolved.left_out_with["policies"] == ["to-g"]
    kept = resolve_environment(config, environ={"TEST_KEY": "k"})
    assert [p["id"] for p in kept.policies] == ["to-g", "to-h"]
    assert kept.policies[0]["fallback"] == [{"groups": ["h"], "deployments": []}]
    assert [d.id for d in resolved.deployments()] == ["d2"]
    assert resolved.new_router().model_groups() == {"h": ["d2"]}


def test_a_key_given_twice_is_an_error_at_its_line() -> None:
    text = DEPLOYMENT + "        context_window: 2000\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    assert (
        "c.yaml:11: model_groups[0].deployments[0].context_window: given twice in one mapping (first on line 10)"
        in (str(caught.value))
    )
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: model_groups: given twice"):
        parse_config(DEPLOYMENT + DEPLOYMENT, "c.yaml")


def test_yaml_nested_past_any_config_is_refused_cleanly() -> None:
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        parse_config("a: " + "[" * 5000 + "]" * 5000, "c.yaml")
    with pytest.raises(ConfigError, match="nested deeper than 64 levels"):
        parse_config("a: " + "[" * 100 + "]" * 100, "c.yaml")


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    """Nine levels of nine aliases: 479 bytes that stand for 387 420 489 values."""
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [{','.join(['*a' + str(i - 1)] * 9)}]" for i in range(1, 9)]
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="more than 200000 values"):
        parse_config("\n".join(lines) + "\nmodel_groups: *a8\n", "c.yaml")
    assert time.perf_counter() - started < 10, "a generous bound: the walk stops at the limit"


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('        extra_headers: {"X-Team": "a\\r\\nX-Injected: 1"}', "extra_headers.X-Team"),
        ('        extra_headers: {"X Bad": "v"}', "extra_headers.X Bad.[key]"),
        ('        api_key_header: "Api Key"', "api_key_header"),
    ],
)
def test_header_names_and_values_that_http_cannot_carry_are_refused(line: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(DEPLOYMENT + line + "\n", "c.yaml")
    assert f"model_groups[0].deployments[0].{field}" in str(caught.value)


def test_a_key_with_a_line_break_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(DEPLOYMENT)
    with pytest.raises(ConfigError, match="TEST_KEY holds a line break"):
        load_config(path, environ={"TEST_KEY": "sk-abc\n"})


def test_a_misspelt_capability_is_an_error_unless_declared() -> None:
    text = DEPLOYMENT + "        capabilities: [streaming, streming]\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml")
    assert 'c.yaml:11: model_groups[0].deployments[0].capabilities[1]: unknown capability "streming"' in str(
        caught.value
    )
    declared = parse_config("custom_capabilities: [streming]\n" + text)
    assert declared.deployments()[0].capabilities == ("streaming", "streming")

"""Configuration: validation messages with lines, API keys from the environment, the embedded default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    assert f"{path}:7: model_groups[0].deployments[0].context_window: Input should be greater than 0" in message
    assert f"{path}:8: model_groups[0].deployments[0].colour: Extra inputs are not permitted" in message
    assert f"{path}:4: model_groups[0].deployments[0].base_url: Field required" in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("model_groups: []", "model_groups: List should have at least 1 item"),
        ("default_group: nope\n" + DEPLOYMENT, "default_group 'nope' is not a model group"),
        (DEPLOYMENT + DEPLOYMENT.split("model_groups:")[1], "model group names must be unique"),
        (DEPLOYMENT.replace("name: g", "name: auto"), '"auto" is reserved'),
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


def test_routing_json_carries_no_secrets() -> None:
    config = parse_config(DEPLOYMENT)
    routing = json.loads(config.routing_json())
    assert routing["model_groups"] == [{"name": "g", "strategy": "weighted", "deployments": ["d1"]}]
    assert set(routing["deployments"][0]) == {
        "id",
        "region",
        "context_window",
        "capabilities",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "weight",
        "priority",
        "rpm",
        "tpm",
    }


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
    kept = resolve_environment(config, environ={"TEST_KEY": "k"})
    assert [p["id"] for p in kept.policies] == ["to-g", "to-h"]
    assert kept.policies[0]["fallback"] == [{"groups": ["h"], "deployments": []}]

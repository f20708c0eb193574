"""Reading a config file: YAML in, a checked `Config` out, every mistake named by the file,
the line and the key as the user wrote it.

A deployment is defined once, at the top level (`deployments:`) or inside a model group, and a
group may name deployments defined elsewhere by id. The routing part of each definition (the
core's `DEPLOYMENT_KEYS`) goes into one document for the Rust core, with the groups, policies,
scoring, rate limits and health; the rest, how to reach the provider, is checked here. The core
names its mistakes by their key in that document, which `_Locations` maps back to the file.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

import router_core
from service.config.model import Config, ConfigError
from service.config.schema import PROVIDER, PROVIDER_TYPES, AnyProvider, ServiceSections
from service.config.tenancy import add_tenant_limits, check_access
from service.redaction import bounded

KeyPath = tuple[str | int, ...]
# What a config file may be: far beyond any real one, far below what would stall the reader.
MAX_FILE_CHARS = 4 * 1024 * 1024
MAX_VALUES = 200_000
MAX_DEPTH = 64
# The sections of the file that are the core's, handed on as written (checked there).
_ROUTING_SECTIONS = ("default_group", "policies", "scoring", "rate_limits", "health", "custom_capabilities")


def parse_config(text: str, source: str = "<config>") -> Config:
    document, lines = _read(text, source)
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    problems: list[str] = []
    try:
        sections = ServiceSections.model_validate(document)
    except ValidationError as error:
        problems += [_describe(issue["loc"], issue["msg"], lines, source) for issue in error.errors()]
        sections = ServiceSections()
    split = _split(document)
    providers: dict[int, AnyProvider] = {}
    for index, (where, settings) in enumerate(split.provider_settings):
        try:
            providers[index] = PROVIDER.validate_python(settings)
        except ValidationError as error:
            problems += [_describe((*where, *i["loc"]), i["msg"], lines, source) for i in error.errors()]
    problems += [
        _describe(where, message, lines, source) for where, message in add_tenant_limits(sections, split.routing)
    ]
    routing_document = json.dumps(_finite(split.routing))
    described = None
    try:
        described = router_core.describe_config(routing_document)
    except router_core.ConfigError as error:
        key, _, message = str(error).partition(": ")
        problems.append(_describe(split.locations.in_file(_key_path(key)), message, lines, source))
    else:
        problems += [_describe(where, message, lines, source) for where, message in check_access(sections, described)]
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    ids = [definition["id"] for definition in split.routing["deployments"]]
    return Config.compiled(
        sections,
        routing_document,
        {ids[index]: provider for index, provider in providers.items()},
        source,
        described_text=described,
    )


@dataclass
class _Locations:
    """Where each key of the core's document is in the file: a deployment defined inside a
    group is `deployments[k]` there; everything else is where the file has it."""

    moved: dict[KeyPath, KeyPath] = field(default_factory=dict)

    def in_file(self, key: KeyPath) -> KeyPath:
        for cut in range(len(key), 0, -1):
            if key[:cut] in self.moved:
                return (*self.moved[key[:cut]], *key[cut:])
        return key


@dataclass
class _Split:
    routing: dict[str, Any] = field(default_factory=lambda: {"deployments": []})
    # Each definition's place in the file and its provider settings (all but the routing keys).
    provider_settings: list[tuple[KeyPath, dict[str, Any]]] = field(default_factory=list)
    locations: _Locations = field(default_factory=_Locations)

    def define(self, where: KeyPath, definition: dict[str, Any]) -> Any:
        """Takes a deployment's definition apart; returns its id (as written)."""
        self.locations.moved[("deployments", len(self.routing["deployments"]))] = where
        self.routing["deployments"].append({k: v for k, v in definition.items() if k in router_core.DEPLOYMENT_KEYS})
        self.provider_settings.append(
            (where, {k: v for k, v in definition.items() if k not in router_core.DEPLOYMENT_KEYS})
        )
        return definition.get("id")


def _split(document: dict[str, Any]) -> _Split:
    split = _Split()
    split.routing.update({key: document[key] for key in _ROUTING_SECTIONS if key in document})
    top_level = document.get("deployments", [])
    if isinstance(top_level, list):
        for i, definition in enumerate(top_level):
            if isinstance(definition, dict):
                split.define(("deployments", i), definition)
            else:  # the core says what is wrong with it
                split.routing["deployments"].append(definition)
    else:
        split.routing["deployments"] = top_level
    if "model_groups" in document:
        split.routing["model_groups"] = _groups(document["model_groups"], split)
    return split


def _groups(groups: Any, split: _Split) -> Any:
    """The groups with their inline definitions taken out and named by id; anything not
    shaped like groups is handed on as it is, for the core to explain."""
    if not isinstance(groups, list):
        return groups
    handed_on = []
    for i, group in enumerate(groups):
        members = group.get("deployments") if isinstance(group, dict) else None
        if not isinstance(members, list):
            handed_on.append(group)
            continue
        named = [
            split.define(("model_groups", i, "deployments", j), member) if isinstance(member, dict) else member
            for j, member in enumerate(members)
        ]
        handed_on.append({**group, "deployments": named})
    return handed_on


def _finite(value: Any) -> Any:
    """`value` with YAML's .inf and .nan, which JSON cannot carry, as text: the core then
    refuses them where it expects a number, naming the key."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _key_path(key: str) -> KeyPath:
    """`policies[0].when.all[1]` → ("policies", 0, "when", "all", 1); the core's `config` is the top level."""
    if key == "config":
        return ()
    return tuple(int(index) if index else name for name, index in re.findall(r"(\w+)|\[(\d+)\]", key))


def _read(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """The document and the line of each key path, read within bounds: a file nested too deep,
    or whose aliases expand into too many values (a few hundred bytes can stand for billions),
    is refused before anything walks it, and a key given twice in one mapping is an error
    rather than the last one silently winning."""
    if len(text) > MAX_FILE_CHARS:
        raise ConfigError(f"{source}: larger than {MAX_FILE_CHARS} characters")
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML: {bounded(str(error), 500)}") from error
    except RecursionError:
        raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    lines, duplicates = _walk(root, source)
    if duplicates:
        problems = [f"{source}:{line}: {_dotted(path)}: {why}" for path, line, why in duplicates]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return yaml.safe_load(text), lines


def _walk(root: yaml.Node | None, source: str) -> tuple[dict[KeyPath, int], list[tuple[KeyPath, int, str]]]:
    """The 1-based line of each key path, and the keys given twice, visiting every value as
    aliases expand it, at most MAX_VALUES of them and MAX_DEPTH deep."""
    lines: dict[KeyPath, int] = {}
    duplicates: list[tuple[KeyPath, int, str]] = []
    pending: list[tuple[yaml.Node, KeyPath]] = [] if root is None else [(root, ())]
    visited = 0
    while pending:
        node, path = pending.pop()
        visited += 1
        if visited > MAX_VALUES:
            raise ConfigError(f"{source}: more than {MAX_VALUES} values (aliases included)")
        if len(path) > MAX_DEPTH:
            raise ConfigError(f"{source}:{node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: dict[object, int] = {}
            for key, value in node.value:
                line = key.start_mark.line + 1
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark)
                if name in seen:
                    why = f"given twice in one mapping (first on line {seen[name]})"
                    duplicates.append(((*path, name), line, why))
                    continue
                seen[name] = line
                lines.setdefault((*path, name), line)
                pending.append((value, (*path, name)))
        elif isinstance(node, yaml.SequenceNode):
            pending += [(item, (*path, index)) for index, item in enumerate(node.value)]
    return lines, duplicates


def _describe(loc: tuple[str | int, ...], message: str, lines: dict[KeyPath, int], source: str) -> str:
    found: KeyPath = ()
    named: KeyPath = ()
    for part in loc:
        if (*found, part) in lines:
            found = (*found, part)
        elif part in PROVIDER_TYPES:
            # The discriminated union puts its tag in the location; it is not a key of the file.
            continue
        named = (*named, part)
    line = lines.get(found)
    where = f"{source}:{line}" if line else source
    return f"{where}: {_dotted(named)}: {message}"


def _dotted(path: KeyPath) -> str:
    """("model_groups", 0, "name") → model_groups[0].name, as the user reads the file."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "(top level)"

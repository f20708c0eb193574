"""What `switchboard check-config` prints: what a config compiles to, so that an operator can
see what will route where before serving it."""

from __future__ import annotations

import json
from typing import Any

from service.config.model import Config


def compiled_report(config: Config) -> str:
    lines = [f"{config.source}: OK", f"default group: {config.default_group or '(none: requests must name a group)'}"]
    lines.append("model groups (strategy: deployments, in the order they are listed):")
    for group in config.model_groups:
        lines.append(f"  {group.name} ({group.strategy}): {', '.join(d.id for d in group.deployments)}")
    lines.append("deployments:")
    for d in config.deployments():
        budget = ", ".join(f"{name} {value}" for name, value in (("rpm", d.rpm), ("tpm", d.tpm)) if value)
        lines.append(
            f"  {d.id}: {d.type} {d.model}, region {d.region}, context window {d.context_window}, "
            f"capabilities [{', '.join(d.capabilities)}], USD {d.input_price_per_mtok:g} / "
            f"{d.output_price_per_mtok:g} per million tokens in / out, weight {d.weight:g}, "
            f"priority {d.priority}" + (f", {budget}" if budget else "")
        )
    if config.policies:
        lines.append("policies, the first that matches decides:")
        lines += [f"  {i}. {_policy(policy)}" for i, policy in enumerate(config.policies, 1)]
    else:
        lines.append("policies: none (each request routes by its model group's strategy)")
    left_out = config.left_out_with
    if config.left_out:
        lines.append(f"left out, their credentials missing: {', '.join(config.left_out)}")
        for what in ("model_groups", "policies"):
            if left_out.get(what):
                lines.append(f"  and with them {what.replace('_', ' ')}: {', '.join(left_out[what])}")
        if left_out.get("fallbacks"):
            tiers = ", ".join(f"{policy} fallback[{index}]" for policy, index in left_out["fallbacks"])
            lines.append(f"  and with them fallback tiers: {tiers}")
        for what, named in (("experiment variants", "variants"), ("shadow deployments", "shadows")):
            if left_out.get(named):
                parts = ", ".join(f"{policy}: {name}" for policy, name in left_out[named])
                lines.append(f"  and with them {what}: {parts}")
    return "\n".join(lines)


def _policy(policy: dict[str, Any]) -> str:
    when = json.dumps(policy["when"], separators=(", ", ": ")) if policy["when"] else "always"
    experiment = policy["experiment"]
    if experiment:
        variants = " or ".join(
            f"variant {variant['name']} {_target(variant)} weight {variant['weight']:g} ordered {variant['strategy']}"
            for variant in experiment["variants"]
        )
        first = f"experiment {experiment['id']} by {experiment['sticky_by']}: {variants}"
    else:
        first = _target(policy["route_to"])
    tiers = " then ".join([first, *(_target(target) for target in policy["fallback"])])
    text = f"{policy['id']}: when {when} → {tiers}"
    text += "" if experiment else f", ordered {policy['strategy']}"
    constraints = {k: v for k, v in policy["constraints"].items() if v}
    if constraints:
        text += f", constraints {json.dumps(constraints)}"
    if policy["hedge"]:
        text += f", hedge {json.dumps(policy['hedge'])}"
    shadow = policy["shadow"]
    if shadow:
        text += (
            f", copies {shadow['sample']:.0%} to shadow {', '.join(shadow['deployments'])}"
            f" (at most {shadow['max_in_flight']} at once, "
        )
        if shadow["keep_share"] >= 1:
            text += "but never sends them: with these tenant priorities they would leave every deployment's whole"
            text += " rate-limit budget to callers; lower rate_limits.priority_reserve)"
        else:
            text += f"leaving {shadow['keep_share']:.0%} of a deployment's rpm/tpm to callers)"
    if policy["content_fallback"] != "none":
        text += f", content refusals go on to the {policy['content_fallback'].replace('_', ' ')}"
    return text


def _target(target: dict[str, list[str]]) -> str:
    named = [f"group {g}" for g in target["groups"]] + list(target["deployments"])
    return "[" + ", ".join(named) + "]"

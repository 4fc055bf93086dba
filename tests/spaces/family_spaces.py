"""Built-in spaces rewritten for another policy family, as a user would write the YAML: the
`family` key set, the sub-policy keys removed, the family's own section when given."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from spaces.schema import SUBPOLICY_KEYS, Space, parse_space


def family_yaml(family: str, section: dict[str, Any] | None = None, base: str = "digits",
                batch_ops: dict[str, Any] | None = None) -> dict[str, Any]:
    """The built-in space `base` as a mapping, its policy searched by `family`."""
    data = yaml.safe_load((resources.files("spaces") / f"{base}.yaml").read_text())
    policy = data["policy"]
    if family != "subpolicies":
        for key in SUBPOLICY_KEYS:
            policy.pop(key, None)
    for other in ("randaugment", "trivialaugment"):  # the base space's own family's section
        if other != family:
            policy.pop(other, None)
    policy["family"] = family
    if section is not None:
        policy[family] = section
    if batch_ops is not None:
        policy["batch_ops"] = batch_ops
    return data


def family_space(family: str, section: dict[str, Any] | None = None, base: str = "digits",
                 batch_ops: dict[str, Any] | None = None) -> Space:
    """`family_yaml`, validated."""
    data = family_yaml(family, section, base, batch_ops)
    return parse_space(yaml.safe_dump(data, sort_keys=False), f"{base}-{family}.yaml")

"""The cluster launcher files: valid for the installed Ray, offline, and safe by construction.

`ray up` would find most of these mistakes only after instances are paid for; here they are
checked with the schema shipped in the Ray wheel and Ray's own config preparation, without any
cloud call. The security properties the README promises (nothing on 0.0.0.0, token auth on, no
trials on the head) are asserted on the commands themselves.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_FILES = ["cluster.yaml", "cluster-gcp.yaml"]
README = ROOT / "README.md"
CLUSTER_SECTION = "## Running on a Ray cluster"

COMMAND_KEYS = ["initialization_commands", "setup_commands", "head_setup_commands",
                "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"]


# ---------------------------------------------------------------- helpers


def load(name: str) -> dict[str, Any]:
    path = ROOT / name
    if not path.exists():
        pytest.fail(f"{name} is missing from the repository root")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def ray_schema() -> dict[str, Any]:
    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text(encoding="utf-8"))


def ray_config_checks(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does to a config before it talks to the cloud; returns the prepared config.

    Uses Ray's private `ray.autoscaler._private.util` (there is no public offline validator).
    Ray is pinned, so this helper is the one place to change if the functions move.
    """
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def all_commands(config: dict[str, Any]) -> list[str]:
    cmds = [c for key in COMMAND_KEYS for c in config.get(key) or []]
    for node in config["available_node_types"].values():
        for key in ("initialization_commands", "worker_setup_commands"):
            cmds.extend(node.get(key) or [])
    return cmds


def simple_commands(command: str) -> list[list[str]]:
    """A shell command line split into its simple commands (at ; && || | & and parentheses)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    parts: list[list[str]] = [[]]
    for tok in lexer:
        if tok and set(tok) <= set(";&|()<>"):
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if p]


def find_commands(commands: list[str], *head: str) -> list[list[str]]:
    """Every simple command among `commands` that starts with the words `head`."""
    n = len(head)
    return [p for cmd in commands for p in simple_commands(cmd)
            if tuple(p[:n]) == head or (p[:1] == ["nohup"] and tuple(p[1:n + 1]) == head)]


def flag(tokens: list[str], name: str) -> str | None:
    """Value of `--name=value` or `--name value` in a token list (None if absent)."""
    for i, tok in enumerate(tokens):
        if tok == name and i + 1 < len(tokens):
            return tokens[i + 1]
        if tok.startswith(name + "="):
            return tok.split("=", 1)[1]
    return None


def node_types(config: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    return head, workers


def is_spot(config: dict[str, Any], node: dict[str, Any]) -> bool:
    nc = node["node_config"]
    if config["provider"]["type"] == "aws":
        return nc.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    if config["provider"]["type"] == "gcp":
        scheduling = nc.get("scheduling") or {}
        entries = scheduling if isinstance(scheduling, list) else [scheduling]
        return any(e.get("provisioningModel") == "SPOT" or e.get("preemptible") is True
                   for e in entries)
    raise AssertionError(f"unexpected provider {config['provider']['type']}")


# ---------------------------------------------------------------- validity


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_file_matches_the_schema_shipped_with_ray(name: str) -> None:
    jsonschema.validate(load(name), ray_schema())


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_file_passes_rays_own_config_checks(name: str) -> None:
    prepared = ray_config_checks(load(name))
    head, workers = node_types(prepared)
    assert head["max_workers"] == 0  # prepare_config pins the head type to its one node
    assert prepared["max_workers"] >= sum(w.get("min_workers", 0) for w in workers)


@pytest.mark.parametrize("mutate, where", [
    (lambda c: node_types(c)[1][0]["resources"].update(GPU=0.5), "fractional resource"),
    (lambda c: c.update(dashboard_host="127.0.0.1"), "unknown top-level key"),
    (lambda c: c["docker"].update(imag="rayproject/ray"), "misspelt docker key"),
])
def test_the_validation_rejects_broken_configs(mutate: Any, where: str) -> None:
    config = load("cluster.yaml")
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, ray_schema())
    with pytest.raises(jsonschema.ValidationError):
        ray_config_checks(config)


def test_ray_checks_catch_a_head_type_that_does_not_exist() -> None:
    config = load("cluster.yaml")
    config["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError, match="head_node_type"):
        ray_config_checks(config)


# ---------------------------------------------------------------- shape and security


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_nothing_is_bound_to_all_interfaces(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    assert "0.0.0.0" not in text
    assert "::/0" not in text
    # Ray's provider defaults start the dashboard on 0.0.0.0 if our start commands went missing.
    prepared = ray_config_checks(load(name))
    assert "0.0.0.0" not in yaml.safe_dump(prepared)
    (head_start,) = find_commands(prepared["head_start_ray_commands"], "ray", "start")
    assert flag(head_start, "--dashboard-host") == "127.0.0.1"
    assert "--head" in head_start


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_mlflow_runs_on_the_head_loopback_with_sqlite(name: str) -> None:
    config = load(name)
    (tokens,) = find_commands(config["head_start_ray_commands"], "mlflow", "server")
    assert flag(tokens, "--host") == "127.0.0.1"
    assert flag(tokens, "--port") == "5000"
    assert (flag(tokens, "--backend-store-uri") or "").startswith("sqlite:////")
    assert flag(tokens, "--artifacts-destination")
    assert not any("mlflow" in c for c in config["worker_start_ray_commands"])


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_token_authentication_stays_on(name: str) -> None:
    config = load(name)
    text = (ROOT / name).read_text(encoding="utf-8")
    assert not re.search(r"RAY_AUTH_MODE\s*=\s*disabled", text)
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    start_cmds = [c for c in starts if "ray start" in c]
    assert start_cmds and all("RAY_AUTH_MODE=token" in c for c in start_cmds)
    # every node gets the same token as the client that runs `ray up`
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_head_runs_no_trials_and_gpu_workers_autoscale_from_zero_on_spot(name: str) -> None:
    config = load(name)
    head, workers = node_types(config)
    assert head["resources"].get("CPU") == 0
    (head_start,) = find_commands(config["head_start_ray_commands"], "ray", "start")
    assert flag(head_start, "--num-cpus") == "0"
    assert head["resources"].get("GPU", 0) == 0
    assert len(workers) == 1
    (worker,) = workers
    assert worker["min_workers"] == 0
    assert worker["max_workers"] >= 1
    assert is_spot(config, worker)
    assert not is_spot(config, head)  # losing the head loses the search driver
    # four trials per GPU (--gpus-per-trial 0.25, --cpus-per-trial 1) fit on one worker
    assert worker["resources"]["GPU"] >= 1
    assert worker["resources"]["CPU"] >= 4 * worker["resources"]["GPU"]


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_image_matches_the_installed_ray(name: str) -> None:
    docker = load(name)["docker"]
    images = [docker["image"]] + [docker[k] for k in ("head_image", "worker_image") if k in docker]
    for image in images:
        repo, tag = image.split(":", 1)
        assert repo == "rayproject/ray", image  # rayproject/ray-ml is no longer published
        assert tag.split("-")[0] == ray.__version__, image
        assert tag.endswith("-gpu"), image


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_every_node_installs_augsearch_and_mounts_shared_storage(name: str) -> None:
    config = load(name)
    assert any("pip install" in c and "/home/ray/augsearch" in c
               for c in config["setup_commands"])
    assert config["file_mounts"].get("/home/ray/augsearch") == "."
    init = " ".join(config["initialization_commands"])
    assert "mount" in init and "/mnt/shared" in init
    assert "--volume=/mnt/shared:/mnt/shared" in config["docker"]["run_options"]
    for cmd in all_commands(config):
        assert "pip install -U ray" not in cmd  # the image's Ray is the pinned one


# ---------------------------------------------------------------- the README's commands


def readme_search_commands() -> list[list[str]]:
    if not README.exists():
        pytest.fail(f"{README} is missing")
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    if CLUSTER_SECTION not in text:
        pytest.fail(f"{README} has no '{CLUSTER_SECTION}' section")
    text = text.split(CLUSTER_SECTION, 1)[1].split("\n## ", 1)[0]
    found = []
    for line in text.splitlines():
        if "python -m search.run" in line:
            tokens = shlex.split(line.split("python -m search.run", 1)[1])
            found.append(tokens)
    return found


def test_readme_search_commands_parse_with_the_real_cli() -> None:
    from search.run import build_parser

    commands = readme_search_commands()
    assert commands, "the README shows no search command"
    for tokens in commands:
        args = build_parser().parse_args(tokens)
        # a job runs inside the cluster: attach to it, and write to the shared mount
        assert args.address == "auto", tokens
        assert args.output and args.output.startswith("/mnt/shared/"), tokens

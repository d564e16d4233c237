"""cluster.yaml and cluster-onprem.yaml: accepted by Ray's own launcher validation, bound to no
public address, free of secrets, with shared storage, installing the project as the README says."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]
# The commands that install things on the nodes; the README's cluster section must list each one.
INSTALL_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
SECTION = "Run on a cluster"
NODE_IP = "$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"  # the IP Ray advertises
SECRETS = [
    r"(?i)aws_secret_access_key", r"(?i)aws_access_key_id", r"(?i)aws_session_token", r"AKIA[0-9A-Z]{16}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"(?i)\b(password|passwd|secret|token|api_key)\s*[:=]",
    r"://[^\s/:@'\"]+:[^\s/@'\"]+@",  # user:password@host in a URI
]


def raw(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def launched(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` checks before it touches a cloud (ray.autoscaler._private.commands._bootstrap_config):
    prepare_config merges the provider's defaults.yaml (and, on premises, builds the node types),
    validate_config checks the result against the autoscaler's ray-schema.json plus its own rules."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def commands(config: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [c for k in keys for c in config.get(k) or []]


def squash(text: str) -> str:
    return " ".join(text.split())


def study_env(config: dict[str, Any]) -> dict[str, str]:
    """The head's ~/.study_env, as its start command writes it: printf 'export %s\\n' 'NAME=value' ..."""
    [cmd] = [c for c in config["head_start_ray_commands"] if "~/.study_env" in c and "printf" in c]
    return dict(re.findall(r"""["']([A-Z_]+)=(.*?)["'](?=\s)""", cmd))


def mlflow_command(config: dict[str, Any]) -> str:
    [cmd] = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    return cmd


def flag(cmd: str, name: str) -> str:
    match = re.search(rf"""{name}[= ]+("[^"]*"|'[^']*'|\S+)""", cmd)
    assert match, f"no {name} in: {cmd}"
    return match.group(1).strip("\"'")


def section(markdown: str) -> str | None:
    """The text under '## Run on a cluster', up to the next heading of level 1 or 2 (outside code blocks)."""
    lines, inside, fence = None, False, False
    for line in markdown.splitlines():
        fence ^= line.startswith("```")
        heading = not fence and re.match(r"#{1,2}\s", line)
        if heading and inside:
            break
        if heading and re.fullmatch(rf"##\s+{SECTION}\s*", line):
            inside, lines = True, []
        elif inside:
            lines.append(line)
    return None if lines is None else "\n".join(lines)


def fenced_lines(text: str) -> set[str]:
    """Every line of the fenced code blocks in ``text``, whitespace squashed."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    return {squash(line) for block in blocks for line in block.splitlines()}


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_launcher_accepts_config(name: str) -> None:
    config = launched(raw(name))
    assert config["head_node_type"] in config["available_node_types"]


def test_cloud_config_has_a_cpu_head_and_autoscaling_multi_gpu_workers() -> None:
    config = launched(raw("cluster.yaml"))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["resources"].get("CPU") == 0  # no trials on the head
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert any(t["resources"].get("GPU", 0) >= 2 and t["min_workers"] < t["max_workers"] for t in workers)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        (lambda c: c.update(setup_comands=c.pop("setup_commands")), r"'setup_comands' was unexpected"),
        (lambda c: c.update(idle_timeout_minutes="ten"), r"'ten' is not of type 'number'"),
        (lambda c: c["auth"].update(ssh_usr="ubuntu"), r"'ssh_usr' was unexpected"),
    ],
    ids=["misspelled-top-level-key", "wrong-type", "misspelled-auth-key"],
)
def test_ray_launcher_rejects_mistakes(name: str, mistake: Any, message: str) -> None:
    config = raw(name)
    mistake(config)
    with pytest.raises(jsonschema.ValidationError, match=message):
        launched(config)


@pytest.mark.parametrize("name", CONFIGS)
def test_nothing_binds_every_interface(name: str) -> None:
    # also after Ray's defaults are merged: AWS's defaults start the dashboard on 0.0.0.0
    for text in ((ROOT / name).read_text(), json.dumps(launched(raw(name)))):
        assert "0.0.0.0" not in text and "[::]" not in text


def test_ray_defaults_would_bind_every_interface() -> None:
    # why the check above looks at the merged config: drop our head start commands and AWS's come back
    config = raw("cluster.yaml")
    del config["head_start_ray_commands"]
    assert "--dashboard-host=0.0.0.0" in json.dumps(launched(config))


@pytest.mark.parametrize("name", CONFIGS)
def test_dashboard_on_loopback(name: str) -> None:
    config = launched(raw(name))
    [head] = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert flag(head, "--dashboard-host") == "127.0.0.1"


@pytest.mark.parametrize("name", CONFIGS)
def test_mlflow_server_on_the_heads_private_address(name: str) -> None:
    config = raw(name)
    cmd, env = mlflow_command(config), study_env(config)
    host = flag(cmd, "--host")
    assert host == "$STUDY_HEAD_IP", host
    address = env["STUDY_HEAD_IP"]
    if address != NODE_IP:  # a literal address (on premises): the head's, and private
        assert address == config["provider"]["head_ip"]
        assert ipaddress.ip_address(address).is_private and not ipaddress.ip_address(address).is_unspecified
    assert config["provider"]["type"] == "local" or address == NODE_IP
    assert '--backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$HOME/mlflow.db}"' in cmd
    assert "*" not in flag(cmd, "--allowed-hosts").split(",")
    assert env["STUDY_TRACKING_URI"] == "http://$STUDY_HEAD_IP:5000" and "--port 5000" in cmd


@pytest.mark.parametrize("name", CONFIGS)
def test_shared_storage_configured(name: str) -> None:
    config = raw(name)
    env = study_env(config)
    storage, artifacts = env["STUDY_STORAGE_PATH"], env["MLFLOW_ARTIFACTS_DESTINATION"]
    if config["provider"]["type"] == "aws":
        assert storage.startswith("s3://") and artifacts.startswith("s3://")
    else:  # an NFS mount: the same absolute path on every machine, not a per-machine place
        for path in (storage, artifacts):
            assert path.startswith("/") and not path.startswith(("/tmp", "/home")), path
    assert flag(mlflow_command(config), "--artifacts-destination") == "$MLFLOW_ARTIFACTS_DESTINATION"


@pytest.mark.parametrize("name", CONFIGS)
def test_no_secrets(name: str) -> None:
    text = (ROOT / name).read_text()
    for pattern in SECRETS:
        assert not re.search(pattern, text), f"{name} looks like it holds a secret ({pattern})"


@pytest.mark.parametrize(
    "leak",
    ["aws_secret_access_key: abc", "AWS_ACCESS_KEY_ID=AKIAABCDEFGHIJKLMNOP", "password: hunter2",
     "postgresql://mlflow:hunter2@db:5432/mlflow", "-----BEGIN OPENSSH PRIVATE KEY-----"],
)
def test_secret_patterns_catch_leaks(leak: str) -> None:
    assert any(re.search(pattern, leak) for pattern in SECRETS)


@pytest.mark.parametrize("name", CONFIGS)
def test_nodes_install_with_make_install(name: str) -> None:
    assert "cd ~/imbalance-study && make install" in raw(name)["setup_commands"]
    assert re.search(r"^install:", (ROOT / "Makefile").read_text(), re.M)


@pytest.mark.parametrize("name", CONFIGS)
def test_readme_lists_the_install_commands(name: str) -> None:
    text = section((ROOT / "README.md").read_text())
    assert text is not None, f"README.md has no '## {SECTION}' section"
    missing = [c for c in commands(raw(name), INSTALL_KEYS) if squash(c) not in fenced_lines(text)]
    assert not missing, f"README.md's '{SECTION}' section does not list these install commands of {name} in a code block: {missing}"

"""cluster.yaml and cluster-onprem.yaml: accepted by Ray's own launcher validation, bound to no
public address, free of secrets, with shared storage, installing the project as docs/cluster.md says;
Ray behind its cluster token, MLflow behind its basic-auth app."""

from __future__ import annotations

import configparser
import copy
import importlib.util
import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.aws.config import _create_default_inbound_rules
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["cluster.yaml", "cluster-onprem.yaml"]
# The commands that install things on the nodes; the README's cluster section must list each one.
INSTALL_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
CLUSTER_PAGE = ROOT / "docs" / "cluster.md"  # the whole page is the cluster section
NODE_IP = "$(python -c 'import ray.util; print(ray.util.get_node_ip_address())')"  # the IP Ray advertises
SECRETS = [
    r"(?i)aws_secret_access_key", r"(?i)aws_access_key_id", r"(?i)aws_session_token", r"AKIA[0-9A-Z]{16}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"(?i)\b(password|passwd|secret|token|api_key)\s*[:=]",
    r"://[^\s/:@'\"]+:[^\s/@'\"]+@",  # user:password@host in a URI
    r"\b[0-9a-f]{64}\b",  # a Ray token as `ray get-auth-token --generate` makes it (secrets.token_hex(32))
    r"\bRAY_AUTH_TOKEN\s*=",  # the token in the environment: the nodes read it from a file instead
    r"\b[A-Z_]*(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY)[A-Z_]*=(?![\"']?[$%])",  # NAME=literal, not =$VAR or =%s
    r"(?i)\b\w*(password|passwd|secret|token)\w*\s+=\s+(?![$%])\S",  # an ini line: name = literal
    r"(?i)[\"']\w*(password|passwd|secret|token)\w*[\"']\s*:\s*[\"']",  # "password": "literal"
]
TOKEN_FILE = "~/.ray/auth_token"  # where Ray looks for the cluster token by default
# The head's start commands that run before Ray: its settings and MLflow's secrets.
SETTINGS_END = "ray stop"


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
    [cmd] = [c for c in config["head_start_ray_commands"] if "> ~/.study_env" in c]
    return dict(re.findall(r"""["']([A-Z_]+)=(.*?)["'](?=\s)""", cmd))


def mlflow_command(config: dict[str, Any]) -> str:
    [cmd] = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    return cmd


def flag(cmd: str, name: str) -> str:
    match = re.search(rf"""{name}[= ]+("[^"]*"|'[^']*'|\S+)""", cmd)
    assert match, f"no {name} in: {cmd}"
    return match.group(1).strip("\"'")


def ray_starts(config: dict[str, Any]) -> list[str]:
    return [c for c in commands(config, ("head_start_ray_commands", "worker_start_ray_commands")) if "ray start" in c]


def without_token_auth(config: dict[str, Any]) -> list[str]:
    """The `ray start` commands that do not run under RAY_AUTH_MODE=token with the token file kept private."""
    return [c for c in ray_starts(config)
            if re.search(r"(?<!RAY_AUTH_MODE=token )\bray start\b", c) or f"chmod 600 {TOKEN_FILE};" not in c]


def run_settings(config: dict[str, Any], home: Path) -> str:
    """Run the head's start commands that come before Ray (settings, MLflow's secrets) in bash with
    HOME=home, as the launcher would; their stdout and stderr."""
    cmds = config["head_start_ray_commands"]
    env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = ""
    for cmd in cmds[:cmds.index(SETTINGS_END)]:
        done = subprocess.run(["bash", "-c", cmd], env=env, cwd=home, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{cmd}\n{done.stderr}"
        out += done.stdout + done.stderr
    return out


def exports(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(.*)$", path.read_text(), re.M))


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)


def fenced_lines(text: str) -> set[str]:
    """Every line of the fenced code blocks in ``text``, whitespace squashed."""
    return {squash(line) for block in fenced_blocks(text) for line in block.splitlines()}


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
     "postgresql://mlflow:hunter2@db:5432/mlflow", "-----BEGIN OPENSSH PRIVATE KEY-----",
     "ray-token: " + "9f" * 32, "RAY_AUTH_TOKEN=$(cat ~/token)", "export MLFLOW_TRACKING_PASSWORD=hunter2hunter2",
     "MLFLOW_FLASK_SERVER_SECRET_KEY='abc'", r"\nadmin_password = hunter2\n", '{"password": "hunter2"}'],
)
def test_secret_patterns_catch_leaks(leak: str) -> None:
    assert any(re.search(pattern, leak) for pattern in SECRETS)


@pytest.mark.parametrize(
    "placeholder",
    ["export MLFLOW_TRACKING_PASSWORD=%s", r"\nadmin_password = %s\n", 'MLFLOW_AUTH_ADMIN_PASSWORD="$PW"',
     "RAY_AUTH_MODE=token ray start --head", f"{TOKEN_FILE}: {TOKEN_FILE}", "secrets.token_urlsafe(32)"],
)
def test_secret_patterns_pass_placeholders(placeholder: str) -> None:
    # what the configs hold instead of secrets: a value filled in on the node, a path, a mode
    assert not [pattern for pattern in SECRETS if re.search(pattern, placeholder)]


@pytest.mark.parametrize("name", CONFIGS)
def test_nodes_install_with_make_install(name: str) -> None:
    assert "cd ~/imbalance-study && make install" in raw(name)["setup_commands"]
    assert re.search(r"^install:", (ROOT / "Makefile").read_text(), re.M)


@pytest.mark.parametrize("name", CONFIGS)
def test_the_cluster_page_lists_the_install_commands(name: str) -> None:
    text = CLUSTER_PAGE.read_text()
    missing = [c for c in commands(raw(name), INSTALL_KEYS) if squash(c) not in fenced_lines(text)]
    assert not missing, f"docs/cluster.md does not list these install commands of {name} in a code block: {missing}"


# ---------------------------------------------------------------- Ray's cluster token


@pytest.mark.parametrize("name", CONFIGS)
def test_every_ray_start_uses_token_auth(name: str) -> None:
    config = launched(raw(name))
    starts = ray_starts(config)
    assert any("--head" in c for c in starts) and any("--address=" in c for c in starts), starts
    assert not without_token_auth(config)


@pytest.mark.parametrize("name", CONFIGS)
def test_ray_defaults_would_start_workers_without_token_auth(name: str) -> None:
    # why every start command must be ours: drop the workers' and Ray's defaults come back, unauthenticated
    config = raw(name)
    del config["worker_start_ray_commands"]
    assert without_token_auth(launched(config))


@pytest.mark.parametrize("name", CONFIGS)
def test_token_file_mounted_from_outside_the_repo(name: str) -> None:
    mounts = raw(name)["file_mounts"]
    assert TOKEN_FILE in mounts, f"{name} does not copy the cluster token to {TOKEN_FILE} on the nodes"
    source = mounts[TOKEN_FILE]
    assert source.startswith("~/"), source  # your laptop's home, whichever folder `ray up` runs from
    assert not Path(os.path.expanduser(source)).resolve().is_relative_to(ROOT), source


def test_the_cluster_page_submits_jobs_with_the_token_and_the_study_credentials() -> None:
    text = CLUSTER_PAGE.read_text()
    assert "ray get-auth-token --generate" in text and f"chmod 600 {TOKEN_FILE}" in text
    submits = [b for b in fenced_blocks(text) if "ray job submit" in b]
    assert submits, "docs/cluster.md shows no `ray job submit`"
    for block in submits:
        # the client presents the token; the study, on the head, reads its MLflow account from the head's file
        assert "export RAY_AUTH_MODE=token" in block.split("ray job submit")[0], block
        assert ". ~/.mlflow_study_credentials &&" in block, block


# ---------------------------------------------------------------- MLflow's basic-auth app and the network


@pytest.mark.parametrize("name", CONFIGS)
def test_mlflow_server_behind_basic_auth(name: str) -> None:
    config = raw(name)
    cmd = mlflow_command(config)
    assert flag(cmd, "--app-name") == "basic-auth"
    assert ". ~/.study_secrets;" in cmd  # the admin password and the CSRF key, which only the head holds
    assert study_env(config)["MLFLOW_AUTH_CONFIG_PATH"] == "$HOME/.mlflow_auth.ini"
    assert study_env(config)["RAY_AUTH_MODE"] == "token"  # the head's shells: `ray status`, the study


@pytest.mark.parametrize("name", CONFIGS)
def test_head_makes_mlflow_secrets_once_and_keeps_them_private(name: str, tmp_path: Path) -> None:
    config = raw(name)
    home = tmp_path / "head"
    home.mkdir()
    (home / ".study_secrets").write_text("export MLFLOW_BACKEND_STORE_URI=sqlite:///kept.db\n")  # yours, kept
    printed = run_settings(config, home)
    files = [home / ".study_secrets", home / ".mlflow_study_credentials"]
    first = {f.name: exports(f) for f in files}
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o600, f"{f.name}: {oct(f.stat().st_mode & 0o777)}"
    values = {**first[".study_secrets"], **first[".mlflow_study_credentials"]}
    assert values["MLFLOW_BACKEND_STORE_URI"] == "sqlite:///kept.db"
    assert values["MLFLOW_TRACKING_USERNAME"] == "study"
    made = [values[k] for k in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_TRACKING_PASSWORD")]
    assert all(len(v) >= 40 for v in made) and len(set(made)) == 3  # secrets.token_urlsafe(32): 43 characters
    assert not any(v in printed for v in made)
    # a restart (`ray up --restart-only`) keeps every secret; another head makes its own
    run_settings(config, home)
    assert {f.name: exports(f) for f in files} == first
    other = tmp_path / "other"
    other.mkdir()
    run_settings(config, other)
    assert exports(other / ".mlflow_study_credentials")["MLFLOW_TRACKING_PASSWORD"] != values["MLFLOW_TRACKING_PASSWORD"]


@pytest.mark.parametrize("name", CONFIGS)
def test_mlflow_auth_settings_are_complete(name: str, tmp_path: Path) -> None:
    # settings MLflow's own basic_auth.ini names (a misspelt one would be ignored), those it reads without a
    # default among them, no admin password (the environment's); the user store on the head's disk
    run_settings(raw(name), tmp_path)
    ours = configparser.ConfigParser()
    ours.read(tmp_path / ".mlflow_auth.ini")
    [mlflow_dir] = importlib.util.find_spec("mlflow").submodule_search_locations  # without importing mlflow
    shipped = configparser.ConfigParser()
    shipped.read(Path(mlflow_dir) / "server" / "auth" / "basic_auth.ini")
    assert set(ours["mlflow"]) <= set(shipped["mlflow"]) - {"admin_password"}, set(ours["mlflow"])
    assert {"default_permission", "database_uri", "admin_username"} <= set(ours["mlflow"])
    assert ours["mlflow"]["database_uri"] == f"sqlite:///{tmp_path}/mlflow_auth.db"
    assert ours["mlflow"]["default_permission"] in {"READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"}
    assert ours["mlflow"]["authorization_function"] == shipped["mlflow"]["authorization_function"]


def public_ingress(config: dict[str, Any]) -> list[tuple[int, int]]:
    """The ports Ray's AWS security group opens to any address: its defaults plus the config's own rules."""
    extra = config["provider"].get("security_group", {}).get("IpPermissions", [])
    rules = _create_default_inbound_rules({"sg-cluster"}, extra)
    return [(r["FromPort"], r["ToPort"]) for r in rules if r.get("IpRanges") or r.get("Ipv6Ranges")]


def test_cloud_security_group_opens_only_ssh_to_the_world() -> None:
    # MLflow (5000), the dashboard (8265) and Ray's own ports answer the cluster's own group only
    assert public_ingress(launched(raw("cluster.yaml"))) == [(22, 22)]
    opened = raw("cluster.yaml")
    opened["provider"]["security_group"] = {"IpPermissions": [
        {"FromPort": 5000, "ToPort": 5000, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "203.0.113.0/24"}]}]}
    assert public_ingress(launched(opened)) == [(22, 22), (5000, 5000)]

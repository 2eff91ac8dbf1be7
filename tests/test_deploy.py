"""The deployment files in deploy/: cron mode (one `retention run` per schedule) and
the daemon (`retention daemon`: Kubernetes Deployment, docker compose, systemd).

No Docker engine or Kubernetes cluster is needed: manifests are parsed and their
required fields checked, the example policies are loaded, validated against the
demo store and run on it, the systemd units go through `systemd-analyze verify`
where it can run, and the cron line is executed with a stub in place of retention.
"""

from __future__ import annotations

import configparser
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from retention.demo import build_demo
from retention.errors import ExitCode, PolicyError
from retention.loader import LoadedPolicy, load_text
from retention.policy import SqlStore
from retention.runner import RunOptions, run_once
from tests.conftest import NOW

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"

#: The one place every target reads the policy from.
POLICY_PATH = "/etc/retention/policy.yaml"
RUN_COMMAND = ["retention", "run", "-c", POLICY_PATH]
DAEMON_COMMAND = ["retention", "daemon", "-c", POLICY_PATH, "--http-port", "9464"]
METRICS_PORT = 9464
SECRET_VARIABLES = ("RETENTION_DB_URL", "RETENTION_AUDIT_KEY")
#: The image's fixed non-root user, also the CronJob's runAsUser.
UID = 10001
#: Exit codes a retry cannot fix: the Job fails at once.
FATAL_EXIT_CODES = [ExitCode.INVALID, ExitCode.SAFETY_LIMIT]

TEST_DB_URL = "postgresql+psycopg://retention:not-a-secret@db.test:5432/app"


# --- Kubernetes ---------------------------------------------------------------------


def _documents(path: Path) -> list[Any]:
    return [doc for doc in YAML(typ="safe").load_all(path.read_text(encoding="utf-8")) if doc]


def _manifest(name: str) -> dict[str, Any]:
    (document,) = _documents(KUBERNETES / name)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def cronjob() -> dict[str, Any]:
    return _manifest("cronjob.yaml")


@pytest.fixture(scope="module")
def configmap() -> dict[str, Any]:
    return _manifest("configmap.yaml")


@pytest.fixture(scope="module")
def secret() -> dict[str, Any]:
    return _manifest("secret.example.yaml")


def _pod(cronjob: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return pod


def _container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(cronjob)["containers"]
    assert isinstance(container, dict)
    return container


@pytest.mark.parametrize(
    ("name", "kind", "api_version", "object_name"),
    [
        ("configmap.yaml", "ConfigMap", "v1", "retention-policy"),
        ("cronjob.yaml", "CronJob", "batch/v1", "retention"),
        ("secret.example.yaml", "Secret", "v1", "retention-secrets"),
        ("deployment.yaml", "Deployment", "apps/v1", "retention-daemon"),
        ("poddisruptionbudget.yaml", "PodDisruptionBudget", "policy/v1", "retention-daemon"),
    ],
)
def test_each_manifest_is_one_kubernetes_object(
    name: str, kind: str, api_version: str, object_name: str
) -> None:
    document = _manifest(name)
    assert (document["apiVersion"], document["kind"], document["metadata"]["name"]) == (
        api_version,
        kind,
        object_name,
    )


def test_kubernetes_directory_holds_exactly_the_five_manifests() -> None:
    assert sorted(p.name for p in KUBERNETES.iterdir()) == [
        "configmap.yaml",
        "cronjob.yaml",
        "deployment.yaml",
        "poddisruptionbudget.yaml",
        "secret.example.yaml",
    ]


def test_cronjob_never_runs_two_jobs_at_once_and_skips_late_starts(
    cronjob: dict[str, Any],
) -> None:
    spec = cronjob["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] == 3600
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 5


def test_cronjob_jobs_retry_little_never_restart_in_place_and_have_a_deadline(
    cronjob: dict[str, Any],
) -> None:
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 2
    assert job["activeDeadlineSeconds"] == 10800
    assert _pod(cronjob)["restartPolicy"] == "Never"


def test_cronjob_fails_the_job_at_once_on_invalid_policy_or_safety_limit(
    cronjob: dict[str, Any],
) -> None:
    """Exit 2 and 3 cannot be fixed by a retry; exit 1 (a rule failed) is retried."""
    rules = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert fail_job == [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": _container(cronjob)["name"],
                "operator": "In",
                "values": FATAL_EXIT_CODES,
            },
        }
    ]
    assert ExitCode.FAILED not in fail_job[0]["onExitCodes"]["values"]
    assert ExitCode.OK not in fail_job[0]["onExitCodes"]["values"]


def test_cronjob_container_runs_retention_run_on_the_mounted_configmap_policy(
    cronjob: dict[str, Any], configmap: dict[str, Any]
) -> None:
    container = _container(cronjob)
    assert container["command"] + container["args"] == RUN_COMMAND

    volumes = {v["name"]: v for v in _pod(cronjob)["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]]]
    source = volumes[mount["name"]]["configMap"]
    assert source["name"] == configmap["metadata"]["name"]
    (item,) = source["items"]
    assert item["key"] in configmap["data"]
    assert f"{mount['mountPath']}/{item['path']}" == POLICY_PATH
    assert mount["readOnly"] is True


def test_cronjob_pod_runs_non_root_read_only_without_privileges(
    cronjob: dict[str, Any],
) -> None:
    pod = _pod(cronjob)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False

    context = _container(cronjob)["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_cronjob_container_requests_and_limits_resources(cronjob: dict[str, Any]) -> None:
    assert _container(cronjob)["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }


def test_cronjob_takes_the_db_url_and_audit_key_from_the_secret(
    cronjob: dict[str, Any], secret: dict[str, Any]
) -> None:
    env = {e["name"]: e for e in _container(cronjob)["env"]}
    for name in SECRET_VARIABLES:
        assert env[name] == {
            "name": name,
            "valueFrom": {"secretKeyRef": {"name": secret["metadata"]["name"], "key": name}},
        }
        assert name in secret["stringData"]
    assert [e["name"] for e in env.values() if "value" in e] == []


def test_secret_example_holds_only_placeholders_and_says_so(secret: dict[str, Any]) -> None:
    text = (KUBERNETES / "secret.example.yaml").read_text(encoding="utf-8")
    assert text.startswith("# EXAMPLE ONLY: placeholder values, not secrets.")
    assert sorted(secret["stringData"]) == sorted(SECRET_VARIABLES)
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())
    assert "data" not in secret


# --- the daemon's Deployment --------------------------------------------------------


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return _manifest("deployment.yaml")


def _daemon_pod(deployment: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def _daemon(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = _daemon_pod(deployment)["containers"]
    assert isinstance(container, dict)
    return container


def test_deployment_runs_two_daemon_replicas_on_the_configmap_policy(
    deployment: dict[str, Any], configmap: dict[str, Any]
) -> None:
    assert deployment["spec"]["replicas"] == 2
    container = _daemon(deployment)
    assert container["command"] + container["args"] == DAEMON_COMMAND
    volumes = {v["name"]: v for v in _daemon_pod(deployment)["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if "configMap" in volumes[m["name"]]]
    source = volumes[mount["name"]]["configMap"]
    assert source["name"] == configmap["metadata"]["name"]
    (item,) = source["items"]
    assert f"{mount['mountPath']}/{item['path']}" == POLICY_PATH
    assert mount["readOnly"] is True
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"


def test_deployment_selector_matches_its_pods_and_the_disruption_budget() -> None:
    deployment = _manifest("deployment.yaml")
    budget = _manifest("poddisruptionbudget.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"] == selector
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    cron = _manifest("cronjob.yaml")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
    assert not selector.items() <= cron["labels"].items(), "the budget would count Job pods"


def test_deployment_exposes_metrics_and_probes_livez_and_readyz(
    deployment: dict[str, Any],
) -> None:
    container = _daemon(deployment)
    assert container["ports"] == [
        {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
    ]
    probes = {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/livez", "metrics"),
        "livenessProbe": ("/livez", "metrics"),
        "readinessProbe": ("/readyz", "metrics"),
    }
    # /readyz may take its 3 s store timeout: the probe must wait longer.
    assert container["readinessProbe"]["timeoutSeconds"] > 3
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)


def test_deployment_gives_sigterm_time_to_reach_a_batch_boundary(
    deployment: dict[str, Any],
) -> None:
    assert _daemon_pod(deployment)["terminationGracePeriodSeconds"] >= 30
    strategy = deployment["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0


def test_deployment_is_hardened_like_the_cronjob(
    deployment: dict[str, Any], cronjob: dict[str, Any]
) -> None:
    pod, cron_pod = _daemon_pod(deployment), _pod(cronjob)
    assert pod["securityContext"] == cron_pod["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert _daemon(deployment)["securityContext"] == _container(cronjob)["securityContext"]
    assert _daemon(deployment)["resources"] == _container(cronjob)["resources"]
    assert _daemon(deployment)["env"] == _container(cronjob)["env"]


# --- docker compose ------------------------------------------------------------------

COMPOSE = DEPLOY / "compose"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = YAML(typ="safe").load((COMPOSE / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_compose_runs_postgres_and_the_daemon_on_the_mounted_policy(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert sorted(services) == ["db", "demo", "retention"]
    assert services["db"]["image"].startswith("postgres:")
    daemon = services["retention"]
    assert ["retention", *daemon["command"]] == DAEMON_COMMAND
    assert daemon["volumes"] == [f"./policy.yaml:{POLICY_PATH}:ro"]
    assert daemon["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert daemon["ports"] == [f"127.0.0.1:{METRICS_PORT}:{METRICS_PORT}"]
    assert daemon["build"] == {"context": "../..", "dockerfile": "deploy/Dockerfile"}
    assert (COMPOSE / daemon["build"]["context"] / daemon["build"]["dockerfile"]).is_file()


def test_compose_daemon_is_hardened_stops_gracefully_and_checks_livez(
    compose: dict[str, Any],
) -> None:
    daemon = compose["services"]["retention"]
    assert daemon["read_only"] is True
    assert daemon["cap_drop"] == ["ALL"]
    assert daemon["security_opt"] == ["no-new-privileges:true"]
    assert daemon["stop_signal"] == "SIGTERM"
    assert daemon["stop_grace_period"] == "30s"
    assert f"http://127.0.0.1:{METRICS_PORT}/livez" in " ".join(daemon["healthcheck"]["test"])


def test_compose_takes_every_secret_from_the_environment(compose: dict[str, Any]) -> None:
    daemon = compose["services"]["retention"]["environment"]
    assert daemon["RETENTION_AUDIT_KEY"] == "${RETENTION_AUDIT_KEY:?set RETENTION_AUDIT_KEY}"
    assert "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@db:5432/app" in daemon["RETENTION_DB_URL"]
    db = compose["services"]["db"]["environment"]
    assert db["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"


@pytest.fixture(scope="module")
def compose_policy_text() -> str:
    return (COMPOSE / "policy.yaml").read_text(encoding="utf-8")


def test_compose_policy_schedules_its_rules_and_keeps_coordination_in_the_database(
    compose_policy_text: str,
) -> None:
    loaded = load_text(compose_policy_text, "policy.yaml", {"RETENTION_DB_URL": TEST_DB_URL})
    policy = loaded.policy
    assert policy.audit.store == "app"
    assert [str(policy.effective_schedule(r)) for r in policy.rules] == [
        "every 15 minutes",
        "every 1 hour",
        "0 3 * * *",
    ]


# --- the ConfigMap's policy ----------------------------------------------------------


@pytest.fixture(scope="module")
def policy_text(configmap: dict[str, Any]) -> str:
    text: str = configmap["data"]["policy.yaml"]
    return text


def test_configmap_policy_loads_with_the_store_url_from_the_environment(
    policy_text: str,
) -> None:
    loaded = load_text(policy_text, "configmap:policy.yaml", {"RETENTION_DB_URL": TEST_DB_URL})
    policy = loaded.policy
    assert [r.name for r in policy.rules] == [
        "security-logs-90d",
        "sessions-30d",
        "access-logs-ip-90d",
    ]
    store = policy.stores["app"]
    assert isinstance(store, SqlStore)
    assert store.url == TEST_DB_URL
    assert policy.audit.store == "app"
    assert policy.audit.key_env == "RETENTION_AUDIT_KEY"


def test_configmap_policy_without_the_db_url_secret_is_invalid(policy_text: str) -> None:
    """No default URL: a missing Secret stops the run (exit 2), never falls back."""
    with pytest.raises(PolicyError) as caught:
        load_text(policy_text, "configmap:policy.yaml", {})
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("stores.app.url", "environment variable RETENTION_DB_URL is not set")
    ]
    assert caught.value.exit_code == ExitCode.INVALID


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deploy-demo") / "demo.db"
    build_demo(f"sqlite:///{path}", NOW)
    return path


def _policy_file(tmp_path: Path, policy_text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text, encoding="utf-8")
    return path


def test_configmap_policy_passes_retention_validate_connect_on_the_demo_store(
    policy_text: str, demo_db: Path, tmp_path: Path
) -> None:
    """The command the README tells users to run, run as a process."""
    env = {**os.environ, "RETENTION_DB_URL": f"sqlite:///{demo_db}"}
    env.pop("RETENTION_CONFIG", None)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "retention", "validate", "--connect"),
            *("--as-of", NOW.isoformat(), "-c", str(_policy_file(tmp_path, policy_text))),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.endswith(
        ": OK (3 rules, 1 stores, 1 holds, 0 minimums; checked against the stores; 0 warnings)\n"
    )


@pytest.mark.parametrize("example", ["configmap", "compose"])
def test_example_policy_runs_on_the_demo_store_without_tripping_its_limits(
    example: str, policy_text: str, compose_policy_text: str, demo_db: Path, tmp_path: Path
) -> None:
    """The examples' safety limits let their first run through the demo's backlog."""
    if example == "compose":
        policy_text = compose_policy_text
    db = tmp_path / "demo.db"
    shutil.copyfile(demo_db, db)
    env = {"RETENTION_DB_URL": f"sqlite:///{db}", "RETENTION_AUDIT_KEY": "test-audit-key"}
    loaded: LoadedPolicy = load_text(policy_text, str(tmp_path / "policy.yaml"), env)
    report = run_once(loaded, NOW, RunOptions(as_of=NOW), env=env)
    assert [(o.rule, o.status, o.error) for o in report.outcomes] == [
        ("security-logs-90d", "ok", None),
        ("sessions-30d", "ok", None),
        ("access-logs-ip-90d", "ok", None),
    ]
    assert all(o.rows > 0 for o in report.outcomes)
    assert report.exit_code == ExitCode.OK


# --- Dockerfile ----------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        instruction, _, arguments = (pending + line).partition(" ")
        out.append((instruction.upper(), arguments.strip()))
        pending = ""
    assert pending == "", "the Dockerfile ends inside a continued line"
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DEPLOY / "Dockerfile")


def _final_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (instruction, _) in enumerate(dockerfile) if instruction == "FROM"]
    return dockerfile[starts[-1] :]


def _args(dockerfile: list[tuple[str, str]], instruction: str) -> list[str]:
    return [a for i, a in dockerfile if i == instruction]


def test_dockerfile_builds_a_wheel_then_installs_it_on_slim_python_311(
    dockerfile: list[tuple[str, str]],
) -> None:
    assert dockerfile[0] == ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm")
    assert _args(dockerfile, "FROM") == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    assert ("RUN", "pip wheel --wheel-dir /wheels .") in dockerfile
    (install,) = _args(_final_stage(dockerfile), "RUN")[1:]
    assert install.startswith("--mount=type=bind,from=build,source=/wheels,target=/wheels ")
    assert "--no-index --find-links=/wheels retention" in install


def test_dockerfile_runs_as_a_fixed_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = _args(_final_stage(dockerfile), "USER")
    assert users == [f"{UID}:{UID}"]
    user, _, group = users[0].partition(":")
    assert user not in ("0", "root")
    assert group not in ("0", "root")
    (create,) = [a for a in _args(_final_stage(dockerfile), "RUN") if "useradd" in a]
    assert f"--uid {UID} --gid {UID}" in create


def test_dockerfile_entrypoint_is_exec_form_retention_and_runs_the_policy(
    dockerfile: list[tuple[str, str]],
) -> None:
    final = _final_stage(dockerfile)
    assert [json.loads(a) for a in _args(final, "ENTRYPOINT")] == [["retention"]]
    assert [json.loads(a) for a in _args(final, "CMD")] == [RUN_COMMAND[1:]]


def test_dockerfile_exposes_the_daemons_metrics_port(dockerfile: list[tuple[str, str]]) -> None:
    assert _args(_final_stage(dockerfile), "EXPOSE") == [str(METRICS_PORT)]


def test_dockerfile_healthcheck_validates_the_mounted_policy(
    dockerfile: list[tuple[str, str]],
) -> None:
    (healthcheck,) = _args(_final_stage(dockerfile), "HEALTHCHECK")
    options, _, command = healthcheck.partition(" CMD ")
    assert json.loads(command) == ["retention", "validate", "-c", POLICY_PATH]
    assert options.split() == [
        "--interval=1m",
        "--timeout=30s",
        "--start-period=10s",
        "--retries=1",
    ]


def test_dockerfile_uses_no_add_and_copies_only_the_wheel_sources(
    dockerfile: list[tuple[str, str]],
) -> None:
    assert _args(dockerfile, "ADD") == [], "ADD fetches URLs and unpacks archives: use COPY"
    sources = [a.split()[:-1] for a in _args(dockerfile, "COPY")]
    assert sources == [["pyproject.toml", "README.md"], ["retention/"]]


def test_dockerfile_bakes_in_no_secret(dockerfile: list[tuple[str, str]]) -> None:
    names = [
        part.split("=", 1)[0]
        for instruction, arguments in dockerfile
        if instruction in ("ENV", "ARG")
        for part in arguments.split()
    ]
    assert [n for n in names if re.search(r"KEY|SECRET|PASSWORD|TOKEN|_URL", n, re.I)] == []
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    for variable in SECRET_VARIABLES:
        assert f"{variable}=" not in text


def test_dockerignore_lets_only_the_wheel_sources_into_the_build_context() -> None:
    lines = [
        line
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert lines == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!retention/",
        "**/__pycache__",
        "**/*.py[cod]",
    ]


# --- systemd -------------------------------------------------------------------------

SYSTEMD = DEPLOY / "systemd"
EXEC_START = f"/opt/retention/bin/retention run -c {POLICY_PATH}"
DAEMON_EXEC_START = (
    f"/opt/retention/bin/retention daemon -c {POLICY_PATH} "
    f"--http-host 127.0.0.1 --http-port {METRICS_PORT}"
)


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text(encoding="utf-8"), source=name)
    return parser


def test_service_is_a_oneshot_running_retention_run_with_secrets_from_a_file() -> None:
    service = _unit("retention.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == EXEC_START
    assert service["EnvironmentFile"] == "/etc/retention/env"
    assert service["DynamicUser"] == "yes"
    assert service["TimeoutStartSec"] == "3h"


def test_service_counts_failed_rules_invalid_policies_and_limits_as_unit_failures() -> None:
    service = _unit("retention.service")["Service"]
    success = set(service.get("SuccessExitStatus", "").split())
    assert success & {str(ExitCode.FAILED), str(ExitCode.INVALID), str(ExitCode.SAFETY_LIMIT)} == (
        set()
    )
    assert service.get("Restart", "no") == "no"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
    ],
)
@pytest.mark.parametrize("unit", ["retention.service", "retention-daemon.service"])
def test_service_sandbox_setting(unit: str, key: str, value: str) -> None:
    assert _unit(unit)["Service"][key] == value


def test_daemon_unit_runs_the_daemon_reloads_on_sighup_and_restarts_unless_invalid() -> None:
    unit = _unit("retention-daemon.service")
    service = unit["Service"]
    assert service["Type"] == "simple"
    assert service["ExecStart"] == DAEMON_EXEC_START
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["EnvironmentFile"] == "/etc/retention/env"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == str(ExitCode.INVALID)
    assert service["KillSignal"] == "SIGTERM"
    assert service["TimeoutStopSec"] == "60s"
    assert unit["Unit"]["Conflicts"] == "retention.timer"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_daemon_unit_has_every_sandbox_setting_of_the_oneshot_unit() -> None:
    oneshot = _unit("retention.service")["Service"]
    daemon = _unit("retention-daemon.service")["Service"]
    differing = {
        key: (value, daemon.get(key))
        for key, value in oneshot.items()
        if key.startswith(("Protect", "Private", "Restrict", "Capability", "Ambient", "System"))
        or key in ("NoNewPrivileges", "MemoryDenyWriteExecute", "LockPersonality", "UMask")
        if daemon.get(key) != value
    }
    assert differing == {}


def test_timer_runs_daily_catches_up_after_downtime_and_spreads_starts() -> None:
    timer = _unit("retention.timer")
    assert dict(timer["Timer"]) == {
        "OnCalendar": "*-*-* 03:00:00 UTC",
        "Persistent": "true",
        "RandomizedDelaySec": "30min",
        "AccuracySec": "1min",
    }
    assert timer["Install"]["WantedBy"] == "timers.target"


def _verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def verifiable_units(tmp_path: Path) -> tuple[Path, ...]:
    """Copies of the units whose ExecStart names an executable that exists here."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: cannot verify the units")
    control = tmp_path / "control" / "control.service"
    control.parent.mkdir()
    control.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n", encoding="utf-8")
    baseline = _verify(control)
    if baseline.returncode != 0 or baseline.stderr.strip():
        pytest.skip(
            "systemd-analyze verify fails even on a trivial unit in this environment: "
            + (baseline.stderr.strip() or f"exit {baseline.returncode}")
        )
    retention = Path(sys.executable).parent / "retention"
    executable = retention if retention.exists() else Path(sys.executable)
    units = tmp_path / "units"
    units.mkdir()
    service_text = (SYSTEMD / "retention.service").read_text(encoding="utf-8")
    assert f"\nExecStart={EXEC_START}\n" in service_text
    service = units / "retention.service"
    service.write_text(
        service_text.replace(
            f"ExecStart={EXEC_START}", f"ExecStart={executable} run -c {POLICY_PATH}"
        ),
        encoding="utf-8",
    )
    timer = units / "retention.timer"
    shutil.copyfile(SYSTEMD / "retention.timer", timer)
    daemon_text = (SYSTEMD / "retention-daemon.service").read_text(encoding="utf-8")
    assert f"\nExecStart={DAEMON_EXEC_START}\n" in daemon_text
    daemon = units / "retention-daemon.service"
    daemon.write_text(
        daemon_text.replace(
            f"ExecStart={DAEMON_EXEC_START}",
            f"ExecStart={executable}{DAEMON_EXEC_START.removeprefix('/opt/retention/bin/retention')}",
        ),
        encoding="utf-8",
    )
    return service, timer, daemon


def test_units_pass_systemd_analyze_verify_without_warnings(
    verifiable_units: tuple[Path, ...],
) -> None:
    done = _verify(*verifiable_units)
    complaints = [line for line in (done.stdout + done.stderr).splitlines() if "retention" in line]
    assert (done.returncode, complaints) == (0, [])


# --- cron ----------------------------------------------------------------------------

CRON = DEPLOY / "cron" / "retention.cron"
CRON_ENV = re.compile(r"^[A-Z_]+=")


def _cron_entry() -> tuple[str, str, str]:
    """(schedule, user, command) of the single job line."""
    (line,) = [
        line
        for line in CRON.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and not CRON_ENV.match(line)
    ]
    fields = line.split(maxsplit=6)
    return " ".join(fields[:5]), fields[5], fields[6]


def test_cron_line_runs_retention_daily_under_flock_as_the_retention_user() -> None:
    schedule, user, command = _cron_entry()
    assert (schedule, user) == ("0 3 * * *", "retention")
    assert command.startswith("flock -n -E 75 /var/lib/retention/cron.lock /bin/sh -c ")
    assert f"exec /opt/retention/bin/retention run -c {POLICY_PATH}'" in command
    assert "%" not in command, "cron turns % into a newline"


def test_cron_file_sets_shell_path_and_mailto() -> None:
    assignments = [
        line for line in CRON.read_text(encoding="utf-8").splitlines() if CRON_ENV.match(line)
    ]
    assert assignments == ["SHELL=/bin/sh", "PATH=/usr/bin:/bin", "MAILTO=root"]


@pytest.fixture
def cron_command(tmp_path: Path) -> str:
    """The cron line's command with its paths moved under tmp_path and a stub retention
    that logs its environment and arguments and exits with the code in `exit-code`."""
    if shutil.which("flock") is None:
        pytest.skip("flock(1) is not installed: cannot run the cron line")
    stub = tmp_path / "retention"
    stub.write_text(
        '#!/bin/sh\necho "$RETENTION_DB_URL|$RETENTION_AUDIT_KEY|$*"\n'
        f"exit $(cat {tmp_path}/exit-code)\n",
        encoding="utf-8",
    )
    stub.chmod(0o755)
    (tmp_path / "env").write_text(
        "RETENTION_DB_URL='postgresql+psycopg://u:p@db/app'\nRETENTION_AUDIT_KEY='k e y'\n",
        encoding="utf-8",
    )
    _, _, command = _cron_entry()
    for original, moved in {
        "/var/lib/retention/cron.lock": tmp_path / "cron.lock",
        "/etc/retention/env": tmp_path / "env",
        "/opt/retention/bin/retention": stub,
        "/var/log/retention/run.log": tmp_path / "run.log",
    }.items():
        assert original in command
        command = command.replace(original, str(moved))
    return command


def _cron_run(command: str, tmp_path: Path, code: int) -> str:
    (tmp_path / "exit-code").write_text(str(code), encoding="utf-8")
    done = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.stdout + done.stderr


def test_cron_line_is_silent_on_success_and_passes_the_secrets_from_the_env_file(
    cron_command: str, tmp_path: Path
) -> None:
    assert _cron_run(cron_command, tmp_path, 0) == ""
    assert (tmp_path / "run.log").read_text(encoding="utf-8") == (
        f"postgresql+psycopg://u:p@db/app|k e y|run -c {POLICY_PATH}\n"
    )


@pytest.mark.parametrize("code", [ExitCode.FAILED, ExitCode.INVALID, ExitCode.SAFETY_LIMIT])
def test_cron_line_prints_the_exit_code_of_a_failed_run_for_cron_to_mail(
    cron_command: str, tmp_path: Path, code: int
) -> None:
    output = _cron_run(cron_command, tmp_path, code)
    assert output.startswith(f"retention run failed with exit code {code} ")


def test_cron_line_exits_75_without_running_while_a_run_holds_the_lock(
    cron_command: str, tmp_path: Path
) -> None:
    with (tmp_path / "cron.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        output = _cron_run(cron_command, tmp_path, 0)
    assert output.startswith("retention run failed with exit code 75 ")
    assert (tmp_path / "run.log").read_text(encoding="utf-8") == "", "retention ran"


# --- every target, and the README ------------------------------------------------------


def test_every_target_reads_the_same_policy_path() -> None:
    for path in [
        DEPLOY / "Dockerfile",
        KUBERNETES / "cronjob.yaml",
        KUBERNETES / "deployment.yaml",
        COMPOSE / "compose.yaml",
        SYSTEMD / "retention.service",
        SYSTEMD / "retention-daemon.service",
        CRON,
    ]:
        assert POLICY_PATH in path.read_text(encoding="utf-8"), path


def test_readme_names_every_deployment_file_and_target() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    files = sorted(
        str(p.relative_to(DEPLOY))
        for p in DEPLOY.rglob("*")
        if p.is_file() and p.name != "README.md"
    )
    assert [f for f in files if f not in readme] == []
    headings = re.findall(r"^## (.+)$", readme, re.M)
    for target in (
        "Docker",
        "Kubernetes CronJob",
        "systemd timer",
        "cron",
        "The daemon",
        "docker compose (daemon)",
        "Kubernetes Deployment (daemon)",
        "systemd daemon",
    ):
        assert target in headings


def test_readme_lists_every_metric_the_daemon_exports() -> None:
    from retention.metrics import Metrics

    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    names = {
        metric.name + ("_total" if metric.type == "counter" else "")
        for metric in Metrics().registry.collect()
    }
    assert sorted(n for n in names if f"`{n}" not in readme) == []

"""The deployment files under deploy/ are valid for the tools that read them.

- Prometheus alert rules: ``promtool check rules`` and the rules' unit tests
  (``promtool test rules``); every metric they name is one the mirror exports.
- Kubernetes: each overlay rendered by ``kubectl kustomize``, every object
  validated against the Kubernetes schemas (``kubernetes-validate``, strict),
  and the wiring checked: probes, requests, non-root, references that resolve.
- HAProxy configurations: ``haproxy -c``; the mirror TOML files: the mirror's
  own configuration loader.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mirror.config import load_config
from mirror.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes minor still commonly run, and the newest the validator knows.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())


def run(argv: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a checker; skip when it is not installed."""
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} not installed (see .ci/install-debian-packages)")
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def exported_metric_names() -> set[str]:
    """Every series name in the mirror's exposition, as Prometheus stores them."""
    metrics = Metrics()
    # Series with an upstream or backend label appear once they have one.
    metrics.upstream_response("docker.io", "GET", 429, 0.1)
    metrics.upstream_ratelimit("docker.io", 100, 5)
    metrics.storage_error("s3", "put")
    metrics.tls_serving(0.0)  # the TLS series exist only with [tls]
    text = metrics.render().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def test_promtool_checks_the_alert_rules() -> None:
    done = run(["promtool", "check", "rules", str(PROMETHEUS / "alerts.yml")])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_rules_unit_tests() -> None:
    done = run(["promtool", "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_cover_the_issue_and_name_only_exported_metrics() -> None:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    alerts = {rule["alert"] for rule in rules if "alert" in rule}
    assert {
        "RegistryMirrorUpstreamDown", "RegistryMirrorUpstreamRateLimited",
        "RegistryMirrorRateLimitNearlyExhausted", "RegistryMirrorHitRatioCollapsed",
        "RegistryMirrorCacheNearBudget", "RegistryMirrorStorageErrors",
        "RegistryMirrorDigestMismatch",
    } <= alerts  # fmt: skip
    exported = exported_metric_names()
    named = {m for rule in rules for m in re.findall(r"(?<![:\w])mirror_[a-z_]+", rule["expr"])}
    assert named
    assert named <= exported, named - exported


# ---------------------------------------------------------------- Kubernetes


def render(kustomization_dir: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` as a list of objects."""
    done = run(["kubectl", "kustomize", str(kustomization_dir)])
    assert done.returncode == 0, done.stderr
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


def render_with_service_monitor(overlay: str, tmp_path: Path) -> list[dict[str, Any]]:
    """An overlay plus the ServiceMonitor component, as docs/deploy.md shows."""
    relative = os.path.relpath(KUBERNETES, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: registry-mirror\nresources:\n  - {relative}/overlays/{overlay}\n"
        f"components:\n  - {relative}/components/service-monitor\n"
    )
    return render(tmp_path)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def mirror_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod template of the mirror's workload (StatefulSet or Deployment)."""
    workloads = [o for o in objects if o["kind"] in ("StatefulSet", "Deployment")
                 and o["metadata"]["name"] == "registry-mirror"]  # fmt: skip
    assert len(workloads) == 1
    template: dict[str, Any] = workloads[0]["spec"]["template"]
    return template


@pytest.mark.parametrize("overlay", ["disk", "s3"])
def test_kubernetes_objects_validate_against_the_schemas(overlay: str, tmp_path: Path) -> None:
    objects = render_with_service_monitor(overlay, tmp_path)
    for obj in objects:
        assert obj["metadata"].get("namespace", "registry-mirror") == "registry-mirror"
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD's object: no schema in kubernetes-validate (checked below)
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    monitor = by_kind(objects, "ServiceMonitor")["registry-mirror"]
    peers = by_kind(objects, "Service")["registry-mirror-peers"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= peers["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in peers["spec"]["ports"]}


@pytest.mark.parametrize("overlay", ["disk", "s3"])
def test_kubernetes_mirror_pod(overlay: str, tmp_path: Path) -> None:
    objects = render(KUBERNETES / "overlays" / overlay)
    template = mirror_pod(objects)
    spec = template["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry-mirror:0.1.0"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["cache"] == "/var/cache/registry-mirror"
    # Every ConfigMap and Secret the pod names exists, or is explicitly optional.
    config_maps = by_kind(objects, "ConfigMap")
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        assert ref is None or ref["optional"] is True, env["name"]
    # Its shutdown fits in the termination grace period.
    toml = next(c for n, c in config_maps.items() if n.startswith("registry-mirror-config"))
    (tmp_path / "mirror.toml").write_text(toml["data"]["mirror.toml"])
    grace = load_config(tmp_path / "mirror.toml", environ={}).shutdown_grace
    sleep = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert sleep + grace + 2 <= spec["terminationGracePeriodSeconds"]
    # Clients' Service reaches mirror pods (disk) or HAProxy (s3).
    service = by_kind(objects, "Service")["registry-mirror"]
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in objects
            if o["kind"] in ("StatefulSet", "Deployment")]  # fmt: skip
    selected = [labels for labels in pods if service["spec"]["selector"].items() <= labels.items()]
    assert len(selected) == 1
    assert selected[0]["app.kubernetes.io/component"] == (
        "balancer" if overlay == "s3" else "mirror"
    )


def test_haproxy_configurations_are_valid_and_route_alike() -> None:
    shipped = DEPLOY / "haproxy" / "haproxy.cfg"
    kubernetes = KUBERNETES / "overlays" / "s3" / "haproxy.cfg"
    for config in (shipped, kubernetes):
        done = run(["haproxy", "-c", "-f", str(config)])
        assert done.returncode == 0, done.stdout + done.stderr
    routing = [
        "acl blob path_reg", "use_backend blobs if blob", "balance hash path,field(-1,/)",
        "hash-type consistent", "option redispatch", "option httpchk GET /healthz",
    ]  # fmt: skip
    for config in (shipped, kubernetes):
        lines = [line.strip() for line in config.read_text().splitlines()]
        for directive in routing:
            assert any(line.startswith(directive) for line in lines), (config, directive)


@pytest.mark.parametrize(
    "path",
    [DEPLOY / "image" / "mirror.toml", KUBERNETES / "base" / "mirror.toml",
     DEPLOY / "mirror.example.toml"],
    ids=lambda p: str(p.relative_to(ROOT)),
)  # fmt: skip
def test_shipped_mirror_configurations_load(path: Path) -> None:
    config = load_config(path, environ={})
    assert config.default_upstream.name == "docker.io"


# ---------------------------------------------------------------- systemd

UNIT = DEPLOY / "registry-mirror.service"
VENV_BIN = "/opt/registry-mirror/venv/bin/registry-mirror"


@pytest.mark.parametrize("optional_credentials", [False, True])
def test_systemd_unit_verifies(optional_credentials: bool, tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert VENV_BIN in text
    # verify checks that ExecStart= exists: point it at an installed program.
    text = text.replace(VENV_BIN, shutil.which("true") or "/bin/true")
    if optional_credentials:  # the commented lines an operator enables
        text = re.sub(r"^#(LoadCredential|Environment)=", r"\1=", text, flags=re.MULTILINE)
    unit = tmp_path / "registry-mirror.service"
    unit.write_text(text)
    done = run(["systemd-analyze", "verify", str(unit)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""  # not even a warning


def test_systemd_unit_reads_secrets_as_credentials(tmp_path: Path) -> None:
    settings = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line[:40]
        and not line.startswith("#")
    )  # fmt: skip
    assert settings["DynamicUser"] == "yes"
    assert settings["RestartPreventExitStatus"] == "2"  # configuration errors: no restart loop
    environment = dict(
        line.removeprefix("Environment=").split("=", 1)
        for line in UNIT.read_text().splitlines() if line.startswith("Environment=")
    )  # fmt: skip
    assert environment["MIRROR_AUTHS_FILE"] == "%d/docker-config.json"
    # The default credential (no file in /etc) is an auths file the mirror accepts.
    name, default = settings["SetCredential"].split(":", 1)
    assert name == "docker-config.json"
    auths = tmp_path / name
    auths.write_text(default)
    config = load_config(None, environ={"MIRROR_AUTHS_FILE": str(auths)})
    assert config.default_upstream.username is None

"""The deployment files, checked statically (no docker engine or Kubernetes cluster here):
docker/compose.yaml (its profiles, services, healthchecks, restart policies, secrets, and
that every command and setting is one the OCS accepts), docker/Dockerfile (base pinned by
digest, OCI labels, a healthcheck that follows OCS_HTTP_PORT, run against a real HTTP
server) and deploy/k8s/ (every object validated against the Kubernetes schema by
kubernetes-validate, then the references between them)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from ocs.cli import build_parser
from ocs.config import SECRET_FILES, Settings, load_settings
from ocs.store.cluster import is_cluster_url, parse_cluster_url
from ocs.store.sentinel import is_sentinel_url, parse_sentinel_url

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
K8S = ROOT / "deploy" / "k8s"
#: The Kubernetes release the manifests are validated against.
K8S_VERSION = "1.30"


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


def services(profile: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if profile in s.get("profiles", [])}


def test_compose_profiles_hold_each_deployment() -> None:
    single, cluster = services("single"), services("cluster")
    assert set(single) == {"redis", "ocs", "hlr-sim", "mediation", "billing", "outbox-export"}
    assert set(cluster) == {
        *(f"redis-node-{i}" for i in range(1, 7)), "redis-cluster-init", "hlr-sim",
        "ocs-cluster", "mediation-cluster", "billing-cluster", "outbox-export-cluster",
    }  # fmt: skip
    assert set(services("sentinel")) == {
        "redis-primary", "redis-replica", *(f"sentinel-{i}" for i in range(1, 4)), "hlr-sim",
        "ocs-sentinel", "mediation-sentinel", "billing-sentinel", "outbox-export-sentinel",
    }  # fmt: skip
    assert set(services("load")) == {"locust"}
    # Every service belongs to a profile; the default one is chosen by docker/.env.
    assert all(s.get("profiles") for s in compose()["services"].values())
    assert "COMPOSE_PROFILES=single" in (ROOT / "docker" / ".env").read_text().splitlines()
    # The cluster's OCS: two workers, replica durability, on the cluster.
    ocs = cluster["ocs-cluster"]
    assert ocs["command"] == ["serve", "--workers", "2"]
    assert ocs["environment"]["OCS_DURABILITY"] == "replica"
    # Sentinel's: the same, on a master and its replica that 3 sentinels watch.
    sentinel = services("sentinel")
    assert sentinel["ocs-sentinel"]["command"] == ["serve", "--workers", "2"]
    assert sentinel["ocs-sentinel"]["environment"]["OCS_DURABILITY"] == "replica"
    replica = sentinel["redis-replica"]["command"]
    assert replica[replica.index("--replicaof") + 1 :][:2] == ["redis-primary", "6379"]
    for i in range(1, 4):
        conf = sentinel[f"sentinel-{i}"]["entrypoint"][2]
        assert "sentinel monitor ocs redis-primary 6379 2" in conf  # a quorum of 2 of 3
        assert sentinel[f"sentinel-{i}"]["environment"] == {"SENTINEL_NAME": f"sentinel-{i}"}


def test_compose_services_restart_and_are_checked() -> None:
    for name, svc in compose()["services"].items():
        assert "restart" in svc, name
        if name == "locust":
            assert svc["restart"] == "no"
        elif name == "redis-cluster-init":  # a one-shot job
            assert svc["restart"] == "on-failure"
        else:
            assert svc["restart"] == "unless-stopped", name
        check = svc.get("healthcheck")
        if name.startswith("sentinel-"):
            assert check["test"] == ["CMD", "redis-cli", "-p", "26379", "ping"], name
        elif svc.get("image", "").startswith("redis:") and name != "redis-cluster-init":
            assert check["test"] == ["CMD", "redis-cli", "ping"], name
        elif name in ("ocs", "ocs-cluster"):
            assert check is None  # the image's HEALTHCHECK (/readyz on OCS_HTTP_PORT)
        # Whatever waits for a Redis waits for it healthy (or for the cluster formed).
        for dep, cond in (svc.get("depends_on") or {}).items():
            want = (
                "service_completed_successfully"
                if dep == "redis-cluster-init"
                else ("service_healthy")
            )
            assert cond == {"condition": want}, (name, dep)


def test_compose_secrets_come_from_files() -> None:
    doc = compose()
    declared = doc["secrets"]
    assert all(set(s) == {"file"} and s["file"].startswith("./secrets/") for s in declared.values())
    made = (ROOT / "docker" / "secrets.sh").read_text()
    for s in declared.values():  # docker/secrets.sh makes every file
        assert Path(s["file"]).name in made, s
    for name, svc in doc["services"].items():
        assert set(svc.get("secrets", [])) <= set(declared), name
        for key, value in (svc.get("environment") or {}).items():
            # No secret in the environment: a *_FILE pointing at a mounted secret.
            if key.removeprefix("OCS_").lower() in SECRET_FILES:
                pytest.fail(f"{name}: {key} given in clear")
            if key.endswith("_FILE") and key.startswith("OCS_"):
                secret = next(d for d, s in declared.items() if Path(s["file"]).name in value
                              or value.endswith("/" + d))  # fmt: skip
                assert secret in svc["secrets"], (name, key)


def _ocs_argv(svc: dict[str, Any]) -> list[str] | None:
    if "entrypoint" in svc:
        return None
    return list(svc.get("command") or ["serve"])


def test_compose_commands_and_settings_are_the_ocs_own() -> None:
    """Every command parses with the OCS's own command line; every OCS_* variable is a
    setting (or a secret's _FILE), and the settings load (values checked by the OCS)."""
    parser = build_parser()
    names = {f.name for f in Settings.__dataclass_fields__.values()}
    for name, svc in compose()["services"].items():
        if svc.get("image", "").startswith("redis:") or name == "locust":
            continue
        argv = _ocs_argv(svc)
        if argv is not None:
            parser.parse_args(argv)
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        for key in env:
            if not key.startswith("OCS_"):
                continue
            setting = key.removeprefix("OCS_").lower()
            assert setting in names or setting.removesuffix("_file") in SECRET_FILES, (name, key)
        plain = {k: v for k, v in env.items() if not k.endswith("_FILE")
                 and k not in ("OCS_HTTP_TLS_CERT", "OCS_HTTP_TLS_KEY")}  # fmt: skip
        settings = load_settings(plain)
        url = settings.redis_url
        if name.endswith("-cluster"):
            assert is_cluster_url(url)
            hosts = {h for h, _ in parse_cluster_url(url).nodes}
            assert hosts <= {f"redis-node-{i}" for i in range(1, 7)}
        elif name.endswith("-sentinel"):
            assert is_sentinel_url(url)
            address = parse_sentinel_url(url)
            assert address.master == "ocs"
            assert {h for h, _ in address.sentinels} == {f"sentinel-{i}" for i in range(1, 4)}
        elif url:
            assert url == "redis://redis:6379/0", name


def _compose_cli() -> list[str]:
    """``docker compose`` (v2) where the CLI has the plugin, else Debian's ``docker-compose``
    (1.29: it checks the file against the Compose schema, .ci/run installs it), else skip."""
    docker = shutil.which("docker")
    if docker and subprocess.run(
        [docker, "compose", "version"], check=False, capture_output=True
    ).returncode == 0:  # fmt: skip
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.skip("neither `docker compose` nor docker-compose here: compose.yaml parsed only")


def test_compose_config_validates(tmp_path: Path) -> None:
    """The Compose implementation's own check of the file (schema, anchors, interpolation)
    for each profile; and it does refuse a bad file."""
    cli = _compose_cli()
    for profile in ("single", "cluster", "sentinel", "single,load"):
        r = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], check=False,
                           capture_output=True, text=True, cwd=COMPOSE.parent,
                           env={"COMPOSE_PROFILES": profile, "PATH": "/usr/bin:/bin"})  # fmt: skip
        assert r.returncode == 0, r.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text(
        COMPOSE.read_text().replace("  ocs-cluster:\n", "  ocs-cluster:\n    bogus: 1\n")
    )
    r = subprocess.run([*cli, "-f", str(bad), "config", "-q"], check=False,
                       capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert r.returncode != 0 and "bogus" in r.stdout + r.stderr


# -- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_pins_its_base_and_labels_the_image() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    # Only the digest's form can be checked here (no registry): an index digest, lower-case.
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base)
    # The comment says honestly whether it was verified (docs/operations.md says the same).
    assert "NOT checked against the registry" in text
    assert "not verified against the registry" in (ROOT / "docs" / "operations.md").read_text()
    assert all(line.split()[1] == "${PYTHON_IMAGE}" or line.split()[1] == "runtime"
               for line in re.findall(r"^FROM .*$", text, re.M))  # fmt: skip
    for label in ("title", "description", "version", "licenses", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text
    # The default target is the OCS (the last stage).
    assert re.findall(r"^FROM .*$", text, re.M)[-1] == "FROM runtime AS ocs"


def _healthcheck() -> str:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (line,) = re.findall(r"^HEALTHCHECK .*CMD (\[.*\])$", text, re.M)
    argv = json.loads(line)
    assert argv[:2] == ["python", "-c"]
    code: str = argv[2]
    return code


@pytest.fixture
async def readyz() -> AsyncIterator[int]:
    app = web.Application()

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/readyz", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_dockerfile_healthcheck_follows_the_http_port(readyz: int) -> None:
    """The image's healthcheck, run as Docker would, asks /readyz on OCS_HTTP_PORT."""

    async def check(port: int) -> int:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _healthcheck(), env={"OCS_HTTP_PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return await proc.wait()

    assert await check(readyz) == 0
    # Nothing listens there: unhealthy.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert await check(free) != 0


# -- Kubernetes --------------------------------------------------------------------------------


def manifests(directory: Path) -> Iterator[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for res in kustomization.get("resources", []):
        path = directory / res
        if path.is_dir():
            yield from manifests(path)
        else:
            yield from (d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in kustomization.get("patches", []):
        assert (directory / patch["path"]).is_file()


def test_k8s_objects_are_valid_kubernetes() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    objects = list(manifests(K8S / "overlays" / "example"))
    assert {o["kind"] for o in objects} == {
        "Namespace", "ConfigMap", "Deployment", "PodDisruptionBudget", "Service",
    }  # fmt: skip
    for obj in objects:
        kv.validate(obj, K8S_VERSION, strict=True)  # raises on any schema error
    patch = yaml.safe_load((K8S / "overlays" / "example" / "replicas.yaml").read_text())
    assert patch["kind"] == "Deployment"
    assert patch["spec"]["replicas"] == 4


def test_k8s_references_hold() -> None:
    objects = list(manifests(K8S / "base"))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    (deploy,) = by_kind["Deployment"]
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (ctr,) = pod["spec"]["containers"]
    assert ctr["args"] == ["serve", "--workers", "2"]
    build_parser().parse_args(ctr["args"])
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["resources"]["requests"]["cpu"] and ctr["resources"]["requests"]["memory"]
    ports = {p["name"]: p for p in ctr["ports"]}
    assert {"http", "native", "diameter", "camel"} == set(ports)
    # Services: one per interface, each selecting the pods, on a port the container has.
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    assert set(services) == {"ocs-http", "ocs-native", "ocs-diameter", "ocs-camel"}
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= labels.items()
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports
            assert p["protocol"] == ports[p["targetPort"]]["protocol"]
    (pdb,) = by_kind["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 < deploy["spec"]["replicas"]
    # The settings: every key a setting, values the OCS accepts; the secrets mounted where
    # the *_FILE settings say; the Secrets come from the overlay's generator.
    (cm,) = by_kind["ConfigMap"]
    assert ctr["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    names = {f.name for f in Settings.__dataclass_fields__.values()}
    files = {}
    for key, value in cm["data"].items():
        setting = key.removeprefix("OCS_").lower()
        assert setting in names or setting.removesuffix("_file") in SECRET_FILES, key
        if key.endswith("_FILE") or key.startswith("OCS_HTTP_TLS_"):
            files[key] = value
    load_settings({k: v for k, v in cm["data"].items() if k not in files})
    mounts = {m["name"]: m["mountPath"] for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    secret_dir = mounts["secrets"]
    overlay = yaml.safe_load((K8S / "overlays" / "example" / "kustomization.yaml").read_text())
    generated = {g["name"]: g for g in overlay["secretGenerator"]}
    assert volumes["secrets"]["secret"]["secretName"] in generated
    in_secret = {Path(f).name for f in generated["ocs-secrets"]["files"]}
    for key, path in files.items():
        assert Path(path).parent == Path(secret_dir) and Path(path).name in in_secret, key
    redis_ref = next(e for e in ctr["env"] if e["name"] == "OCS_REDIS_URL")
    ref = redis_ref["valueFrom"]["secretKeyRef"]
    assert ref["name"] in generated
    assert any(f.split("=")[0] == ref["key"] for f in generated[ref["name"]]["files"])

"""The Kubernetes manifests (deploy/kubernetes), checked offline.

Each overlay is rendered with ``kubectl kustomize`` and every document is
validated, strictly (unknown fields are errors), against the schemas of
Kubernetes `KUBERNETES_VERSION` that the ``kubernetes-validate`` package ships.
Schemas do not say whether the parts fit together, so the tests also check
what a cluster would only show at run time: the node agent's pod in the host
network with its capabilities, devices and ports; the arguments each container
ends up with once ``$(VAR)`` is expanded from ConfigMaps, Secrets and the
downward API, and that ``pktchain`` itself accepts them; that every reference
(ConfigMap, Secret, key, ServiceAccount, named port) resolves; that selectors
select the pods they are meant for; and the bundled etcd's member list.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import io
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pktchain.cli import build_parser
from pktchain.node.function_file import parse_functions
from support.kubernetes import (
    DEPLOY,
    FIELD_SAMPLES,
    KubectlMissingError,
    Rendered,
    containers,
    kubectl,
    option,
    pod_spec,
    render,
)
from support.paths import ROOT

KUBERNETES_VERSION = "1.32"
"""The Kubernetes release whose API schemas the manifests are validated against
(docs/kubernetes.md names the same)."""

DOC = ROOT / "docs" / "kubernetes.md"
OVERLAYS = ("with-etcd", "external-etcd")
NAMESPACE = "pktchain"
NODE_CAPABILITIES = {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
UNDERLAY = (4790, "UDP")
API = (9696, "TCP")
BUNDLED_ETCD_MEMBERS = 3
API_REPLICAS = 2


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


IMAGE = f"pktchain:{project_version()}"


@pytest.fixture(scope="module")
def overlays() -> dict[str, Rendered]:
    try:
        return {name: render(DEPLOY / "overlays" / name) for name in OVERLAYS}
    except KubectlMissingError as exc:
        pytest.fail(str(exc))


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, overlays: dict[str, Rendered]) -> Rendered:
    return overlays[request.param]


def node_container(rendered: Rendered) -> dict[str, Any]:
    (container,) = pod_spec(rendered.get("DaemonSet", "pktchain-node"))["containers"]
    return container


def api_container(rendered: Rendered) -> dict[str, Any]:
    (container,) = pod_spec(rendered.get("Deployment", "pktchain-api"))["containers"]
    return container


def env_file(path: str) -> dict[str, str]:
    lines = (DEPLOY / path).read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def expected_etcd(rendered: Rendered) -> str:
    if rendered.find("StatefulSet", "etcd") is not None:
        service = rendered.get("Service", "etcd-client")
        (port,) = (p["port"] for p in service["spec"]["ports"] if p["name"] == "client")
        return f"http://etcd-client.{service['metadata']['namespace']}.svc:{port}"
    return env_file("overlays/external-etcd/etcd.env")["ETCD_ENDPOINTS"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- Rendering and schemas -----------------------------------------------------------


def test_kustomize_renders_each_overlay_without_warnings(rendered: Rendered) -> None:
    assert rendered.warnings.strip() == ""
    kinds = {doc["kind"] for doc in rendered.documents}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "DaemonSet"} <= kinds
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds


def test_every_document_passes_strict_schema_validation(rendered: Rendered) -> None:
    failures = []
    for doc in rendered.documents:
        what = f"{doc['kind']} {doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            failures.append(f"{what}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(f"{what}: {exc.message}")
    assert failures == []


def test_strict_validation_refuses_a_misspelt_field(overlays: dict[str, Rendered]) -> None:
    # The check above is only worth something if a mistake fails it.
    daemonset = copy.deepcopy(overlays["with-etcd"].get("DaemonSet", "pktchain-node"))
    spec = daemonset["spec"]["template"]["spec"]
    spec["hostNetwrok"] = spec.pop("hostNetwork")
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrok"):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_documented_command_validates_each_overlay(overlay: str) -> None:
    docs = DOC.read_text()
    assert f"kubernetes-validate --strict -k {KUBERNETES_VERSION} -" in docs
    try:
        binary = kubectl()
    except KubectlMissingError as exc:
        pytest.fail(str(exc))
    rendering = subprocess.run(
        [binary, "kustomize", str(DEPLOY / "overlays" / overlay)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        check=True,
    )
    validation = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES_VERSION, "-"],
        input=rendering.stdout,
        capture_output=True,
        timeout=120,
        check=False,
    )
    report = validation.stdout.decode()
    assert validation.returncode == 0, report
    assert "ERROR" not in report
    assert "WARN" not in report
    documents = len([doc for doc in rendering.stdout.split(b"\n---\n") if doc.strip()])
    assert report.count("passed for resource") == documents


# --- The node agent ------------------------------------------------------------------


def test_the_node_agent_runs_in_the_host_network_namespace(rendered: Rendered) -> None:
    daemonset = rendered.get("DaemonSet", "pktchain-node")
    spec = pod_spec(daemonset)
    assert spec["hostNetwork"] is True
    # Without it a host-network pod resolves with the host's resolver, which
    # knows nothing of the etcd Service's name.
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    ports = {(p["containerPort"], p["protocol"]) for p in node_container(rendered)["ports"]}
    assert ports == {UNDERLAY, API}


def test_the_node_agent_has_its_capabilities_and_no_others(rendered: Rendered) -> None:
    context = node_container(rendered)["securityContext"]
    assert set(context["capabilities"]["add"]) == NODE_CAPABILITIES
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context.get("privileged", False) is False
    assert context["runAsUser"] == 0
    # The API server refuses allowPrivilegeEscalation: false beside SYS_ADMIN
    # (a rule of its own, not in the schemas).
    assert context.get("allowPrivilegeEscalation", True) is True


def test_the_node_agent_mounts_the_tun_device_namespaces_and_run_folder(
    rendered: Rendered,
) -> None:
    daemonset = rendered.get("DaemonSet", "pktchain-node")
    volumes = {v["name"]: v for v in pod_spec(daemonset)["volumes"]}
    mounts = {m["mountPath"]: m for m in node_container(rendered)["volumeMounts"]}
    tun = volumes[mounts["/dev/net/tun"]["name"]]["hostPath"]
    assert tun == {"path": "/dev/net/tun", "type": "CharDevice"}
    netns = mounts["/run/netns"]
    assert volumes[netns["name"]]["hostPath"]["path"] == "/run/netns"
    # Namespaces made on the host after the pod started must show up inside.
    assert netns["mountPropagation"] == "HostToContainer"
    run = mounts["/run/pktchain"]
    assert volumes[run["name"]]["hostPath"]["path"] == "/run/pktchain"
    assert not run.get("readOnly", False)


def test_the_node_agent_arguments(rendered: Rendered) -> None:
    container = node_container(rendered)
    assert container["image"] == IMAGE
    args = rendered.effective_args(container)
    assert args[0] == "node"
    assert option(args, "--name") == FIELD_SAMPLES["spec.nodeName"]
    assert option(args, "--underlay") == FIELD_SAMPLES["status.podIP"]
    assert option(args, "--api") == f"{FIELD_SAMPLES['status.podIP']}:{API[0]}"
    assert option(args, "--etcd") == expected_etcd(rendered)
    assert option(args, "--cluster") == "pktchain"
    assert int(option(args, "--lease-ttl")) > 0
    # With etcd the state is there: no SQLite file, and no option saying so.
    assert not {"--state", "--no-state"} & set(args)
    assert not [arg for arg in args if "$(" in arg]
    env = rendered.environment(container)
    assert env["PKTCHAIN_API_TOKEN"] == "<secret>"


def test_the_functions_file_is_mounted_and_valid(rendered: Rendered) -> None:
    container = node_container(rendered)
    path = option(rendered.effective_args(container), "--functions")
    (mount,) = (m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volumes = pod_spec(rendered.get("DaemonSet", "pktchain-node"))["volumes"]
    (volume,) = (v for v in volumes if v["name"] == mount["name"])
    configmap = rendered.get("ConfigMap", volume["configMap"]["name"])
    key = path.removeprefix(mount["mountPath"] + "/")
    # The same reader the node uses; it raises on any mistake, with its line.
    assert parse_functions(configmap["data"][key], source=key) == ()


# --- The API servers -----------------------------------------------------------------


def test_the_api_deployment_and_its_service(rendered: Rendered) -> None:
    deployment = rendered.get("Deployment", "pktchain-api")
    assert deployment["spec"]["replicas"] == API_REPLICAS
    container = api_container(rendered)
    assert container["image"] == IMAGE
    args = rendered.effective_args(container)
    assert args[:2] == ["api", "serve"]
    assert option(args, "--etcd") == expected_etcd(rendered)
    assert option(args, "--cluster") == "pktchain"
    assert option(args, "--listen").endswith(f":{API[0]}")
    service = rendered.get("Service", "pktchain-api")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["protocol"]) == API
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == API[0]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert matches(service["spec"]["selector"], labels)
    node_labels = rendered.get("DaemonSet", "pktchain-node")["spec"]["template"]["metadata"]
    assert not matches(service["spec"]["selector"], node_labels["labels"])


def test_the_token_secret_reaches_the_nodes_and_the_api_servers(rendered: Rendered) -> None:
    secret = rendered.generated("Secret", "pktchain-api-token")
    for container in (node_container(rendered), api_container(rendered)):
        (ref,) = (
            var["valueFrom"]["secretKeyRef"]
            for var in container["env"]
            if var["name"] == "PKTCHAIN_API_TOKEN"
        )
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["data"]


# --- Everything fits together --------------------------------------------------------


def test_every_reference_resolves(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        spec = pod_spec(workload)
        rendered.get("ServiceAccount", spec["serviceAccountName"])
        assert spec["automountServiceAccountToken"] is False
        for volume in spec.get("volumes", ()):
            if "configMap" in volume:
                rendered.get("ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                rendered.get("Secret", volume["secret"]["secretName"])
        for container in containers(workload):
            rendered.environment(container)  # raises on a missing object or key
            for source in container.get("envFrom", ()):
                if "configMapRef" in source:
                    rendered.get("ConfigMap", source["configMapRef"]["name"])
                if "secretRef" in source:
                    rendered.get("Secret", source["secretRef"]["name"])


def test_every_namespaced_object_is_in_the_namespace(rendered: Rendered) -> None:
    rendered.get("Namespace", NAMESPACE)
    for doc in rendered.documents:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]


def test_selectors_select_their_own_pods_only(rendered: Rendered) -> None:
    templates = {
        f"{w['kind']}/{w['metadata']['name']}": w["spec"]["template"]["metadata"]["labels"]
        for w in rendered.workloads()
    }
    for workload in rendered.workloads():
        name = f"{workload['kind']}/{workload['metadata']['name']}"
        selector = workload["spec"]["selector"]["matchLabels"]
        assert [w for w, labels in templates.items() if matches(selector, labels)] == [name]
    selected = [
        *((s["metadata"]["name"], s["spec"]["selector"]) for s in rendered.of_kind("Service")),
        *(
            (p["metadata"]["name"], p["spec"]["selector"]["matchLabels"])
            for p in rendered.of_kind("PodDisruptionBudget")
        ),
    ]
    for name, selector in selected:
        chosen = [w for w, labels in templates.items() if matches(selector, labels)]
        assert len(chosen) == 1, f"{name} selects {chosen}"


def test_services_target_ports_their_pods_have(rendered: Rendered) -> None:
    for service in rendered.of_kind("Service"):
        (workload,) = (
            w
            for w in rendered.workloads()
            if matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        )
        ports = {
            p["name"]: (p["containerPort"], p["protocol"])
            for c in containers(workload)
            for p in c.get("ports", ())
        }
        for port in service["spec"]["ports"]:
            assert ports[port["targetPort"]] == (port["port"], port["protocol"])


def test_every_container_has_probes_and_resources(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert "livenessProbe" in container, where
            assert "readinessProbe" in container, where
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) == {"cpu", "memory"}, where


def test_probes_use_what_the_container_has(rendered: Rendered) -> None:
    node = node_container(rendered)
    liveness = node["livenessProbe"]["exec"]["command"]
    # An exec probe's $(VAR) is not expanded from the downward API: a shell
    # reads the node's name from the environment.
    assert liveness[:2] == ["sh", "-c"]
    assert 'pktchain node status --name "$NODE_NAME"' in liveness[2]
    env = rendered.environment(node)
    assert env["PKTCHAIN_URL"] == f"http://{FIELD_SAMPLES['status.podIP']}:{API[0]}"
    for container in (node, api_container(rendered)):
        assert container["readinessProbe"]["exec"]["command"][:3] == [
            "pktchain",
            "port-chain",
            "list",
        ]
        assert rendered.environment(container)["PKTCHAIN_TOKEN"] == "<secret>"
    for workload in rendered.workloads():
        named = {p["name"] for c in containers(workload) for p in c.get("ports", ())}
        for container in containers(workload):
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.get(kind, {})
                for action in ("httpGet", "tcpSocket"):
                    if action in probe and isinstance(probe[action]["port"], str):
                        assert probe[action]["port"] in named


def test_only_the_node_agent_is_privileged(rendered: Rendered) -> None:
    # The API servers and etcd meet the "restricted" Pod Security level.
    for workload in rendered.workloads():
        if workload["metadata"]["name"] == "pktchain-node":
            continue
        spec = pod_spec(workload)
        assert not spec.get("hostNetwork", False)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["readOnlyRootFilesystem"] is True


# --- Where etcd is -------------------------------------------------------------------


def test_the_bundled_etcd_cluster(overlays: dict[str, Rendered]) -> None:
    rendered = overlays["with-etcd"]
    statefulset = rendered.get("StatefulSet", "etcd")
    spec = statefulset["spec"]
    assert spec["replicas"] == BUNDLED_ETCD_MEMBERS
    # A new cluster's members must start together: each waits for a quorum.
    assert spec["podManagementPolicy"] == "Parallel"
    headless = rendered.get("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert {(p["name"], p["port"]) for p in headless["spec"]["ports"]} == {
        ("client", 2379),
        ("peer", 2380),
    }
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    (container,) = pod_spec(statefulset)["containers"]
    assert claim["metadata"]["name"] in {m["name"] for m in container["volumeMounts"]}

    # The member list names every replica by its stable DNS name, and each
    # member advertises the URL the list gives it.
    name, namespace = statefulset["metadata"]["name"], statefulset["metadata"]["namespace"]
    domain = f"{headless['metadata']['name']}.{namespace}.svc"
    members = [f"{name}-{i}" for i in range(BUNDLED_ETCD_MEMBERS)]
    initial = dict(
        member.split("=", 1)
        for member in rendered.environment(container)["ETCD_INITIAL_CLUSTER"].split(",")
    )
    assert initial == {m: f"http://{m}.{domain}:2380" for m in members}
    for member in members:
        values = rendered.environment(container, {**FIELD_SAMPLES, "metadata.name": member})
        assert values["ETCD_NAME"] == member
        assert values["ETCD_INITIAL_ADVERTISE_PEER_URLS"] == initial[member]
        assert values["ETCD_ADVERTISE_CLIENT_URLS"] == f"http://{member}.{domain}:2379"
    # etcd would read the Services' variables (ETCD_CLIENT_PORT, ...) as settings.
    assert pod_spec(statefulset)["enableServiceLinks"] is False
    pdb = rendered.get("PodDisruptionBudget", "etcd")
    assert pdb["spec"]["minAvailable"] == BUNDLED_ETCD_MEMBERS // 2 + 1


def test_the_external_etcd_overlay_brings_no_etcd(overlays: dict[str, Rendered]) -> None:
    rendered = overlays["external-etcd"]
    assert rendered.of_kind("StatefulSet") == []
    assert [s["metadata"]["name"] for s in rendered.of_kind("Service")] == ["pktchain-api"]
    urls = expected_etcd(rendered).split(",")
    assert urls and all(re.fullmatch(r"https?://[^/,\s]+:\d+", url) for url in urls)
    cluster = rendered.generated("ConfigMap", "pktchain-cluster")
    assert cluster["data"]["ETCD_ENDPOINTS"] == ",".join(urls)


# --- docs/kubernetes.md's own overlay ------------------------------------------------


def test_the_documented_overlay_of_your_own_renders_as_documented(tmp_path: Path) -> None:
    # docs/kubernetes.md's own overlay and its --af-packet patch, put together.
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)]
    (own,) = (b for b in blocks if "resources" in b)
    (patch,) = (b for b in blocks if set(b) == {"patches"})
    folder = tmp_path / "my-cluster"
    folder.mkdir()
    # The docs' overlay sits beside deploy/; this one reaches it from the temporary folder.
    (base,) = own["resources"]
    own["resources"] = [os.path.relpath(ROOT / base.removeprefix("../"), folder)]
    own.update(patch)
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(own))
    (folder / "api-token.env").write_text("token=0123abcd\n")
    try:
        rendered = render(folder)
    except KubectlMissingError as exc:
        pytest.fail(str(exc))

    for doc in rendered.documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    (image,) = own["images"]
    for container in (node_container(rendered), api_container(rendered)):
        assert container["image"] == f"{image['newName']}:{image['newTag']}"
        assert option(rendered.effective_args(container), "--cluster") == "lab-east"
    secret = rendered.generated("Secret", "pktchain-api-token")
    assert base64.b64decode(secret["data"]["token"]) == b"0123abcd"
    args = rendered.effective_args(node_container(rendered))
    assert args[-1] == "--af-packet=eth1=uplink"
    assert option(args, "--etcd") == expected_etcd(rendered)


# --- pktchain accepts what the manifests tell it -------------------------------------


def _help(words: list[str]) -> str | None:
    """The help text of a pktchain command, or None if there is no such command."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args([*words, "--help"])
        except SystemExit as exc:
            return out.getvalue() if exc.code == 0 else None
    return out.getvalue()


def _parse(args: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"pktchain refuses {args}: {err.getvalue().strip()} (exit {exc.code})")


def test_pktchain_accepts_the_node_agent_arguments(rendered: Rendered) -> None:
    node_help = _help(["node"])
    assert node_help is not None
    if "--etcd" not in node_help:
        pytest.skip("this pktchain node keeps its state locally (no --etcd)")
    _parse(rendered.effective_args(node_container(rendered)))
    for probe in ("livenessProbe", "readinessProbe"):
        command = node_container(rendered)[probe]["exec"]["command"]
        if command[0] == "pktchain":
            _parse(command[1:])


def test_pktchain_accepts_the_api_server_arguments(rendered: Rendered) -> None:
    if _help(["api", "serve"]) is None:
        pytest.skip("this pktchain has no `api serve` command")
    _parse(rendered.effective_args(api_container(rendered)))
    _parse(api_container(rendered)["readinessProbe"]["exec"]["command"][1:])


# --- The image -----------------------------------------------------------------------


def test_the_dockerfile_builds_the_image_the_manifests_name() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"-t {IMAGE} ." in dockerfile
    assert 'org.opencontainers.image.version="' + project_version() + '"' in dockerfile
    assert re.search(r"^FROM debian:\$\{DEBIAN_RELEASE\}-slim$", dockerfile, re.MULTILINE)
    assert "ARG DEBIAN_RELEASE=bookworm" in dockerfile
    assert 'ENTRYPOINT ["pktchain"]' in dockerfile
    assert re.search(r"pip install [^\n]*\.\s*\\?\n", dockerfile)
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split()
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(ignore)

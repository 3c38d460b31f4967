"""A stand-in kubelet for the tests: runs the containers of a pod spec the controller wrote as local processes.

No container runtime runs here. What can be run is what a pod runs: each container's command and arguments,
its environment and its mounts, with every mount path mapped to a local folder (Secrets and ConfigMaps written
as the kubelet projects them, ``items`` included, projected volumes too; emptyDirs and claims as folders; a mount
inside another's path as a link in that folder), ``python`` the test's interpreter (or the one a pod's image
would hold, e.g. OpenFL's environment), Flower's commands this environment's, and the pod's ports moved to free
ones. Init containers run first, each to success, retried as the kubelet retries them. So the tests start exactly
the command lines the controller renders.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.federation.processes import ManagedProcess, ProcessSupervisor, free_port

_BIN = Path(sys.executable).parent


def secret_files(secret: Mapping[str, Any]) -> dict[str, str]:
    """A Secret's data as the files the kubelet projects (base64 decoded)."""
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


@dataclass
class LocalPod:
    name: str
    root: Path
    spec: Mapping[str, Any]
    ports: dict[int, int]
    """Container port -> the free local port it is moved to."""
    mounts: dict[str, Path] = field(default_factory=dict)
    """Volume name -> its local folder."""
    python: str = sys.executable
    """What ``python`` is in this pod's image."""
    processes: dict[str, ManagedProcess] = field(default_factory=dict)


class Kubelet:
    def __init__(self, root: Path, supervisor: ProcessSupervisor, env: Mapping[str, str]) -> None:
        self.root = root
        self.supervisor = supervisor
        self.env = dict(env)

    def start(
        self,
        name: str,
        pod_spec: Mapping[str, Any],
        *,
        secrets: Mapping[str, Mapping[str, str]],
        config_maps: Mapping[str, Mapping[str, str]] | None = None,
        claims: Mapping[str, Path] | None = None,
        rewrite: Mapping[str, str] | None = None,
        skip: tuple[str, ...] = (),
        loopback_ports: tuple[int, ...] = (),
        init_timeout: float = 60.0,
        python: str = sys.executable,
    ) -> LocalPod:
        """Start the pod ``name``: ``secrets``/``config_maps`` by name -> file name -> text, ``claims`` by claim
        name -> folder; ``rewrite``: argument text to replace (the cluster network: a Service name -> 127.0.0.1);
        ``skip``: containers not to run; ``loopback_ports``: ports the pod uses inside itself only (each pod has
        its own network on a node; here they share one)."""
        ports = [p["containerPort"] for c in pod_spec["containers"] for p in c.get("ports", [])]
        ports += list(loopback_ports)
        pod = LocalPod(name, self.root / name, pod_spec, {port: free_port() for port in ports}, python=python)
        for volume in pod_spec.get("volumes", []):
            folder = pod.root / "volumes" / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            pod.mounts[volume["name"]] = folder
            if "secret" in volume:
                files = secrets.get(volume["secret"]["secretName"])
                if files is None and not volume["secret"].get("optional"):
                    raise AssertionError(f"pod {name}: no Secret {volume['secret']['secretName']}")
                project(folder, files or {}, volume["secret"].get("items"))
            elif "configMap" in volume:
                project(folder, (config_maps or {})[volume["configMap"]["name"]], volume["configMap"].get("items"))
            elif "projected" in volume:
                for source in volume["projected"]["sources"]:
                    if "secret" in source:
                        project(folder, secrets[source["secret"]["name"]], source["secret"].get("items"))
                    elif "configMap" in source:
                        files = (config_maps or {})[source["configMap"]["name"]]
                        project(folder, files, source["configMap"].get("items"))
            elif "persistentVolumeClaim" in volume:
                pod.mounts[volume["name"]] = (claims or {})[volume["persistentVolumeClaim"]["claimName"]]
        _link_nested_mounts(pod)
        for init in pod_spec.get("initContainers", []):
            self._run_init(pod, init, rewrite or {}, init_timeout)
        for container in pod_spec["containers"]:
            if container["name"] in skip:
                continue
            argv, env = self._command(pod, container, rewrite or {})
            pod.processes[container["name"]] = self.supervisor.start(f"{name}-{container['name']}", argv, env)
        return pod

    def stop(self, pod: LocalPod) -> None:
        for process in pod.processes.values():
            self.supervisor.stop(process)

    def update_config_map(self, pod: LocalPod, volume: str, files: Mapping[str, str]) -> None:
        """What the kubelet does when a mounted ConfigMap changes: the files are replaced, atomically."""
        project(pod.mounts[volume], files, None)

    def _run_init(
        self, pod: LocalPod, container: Mapping[str, Any], rewrite: Mapping[str, str], timeout: float
    ) -> None:
        argv, env = self._command(pod, container, rewrite)
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run(argv, env={**self.env, **env}, capture_output=True, text=True, timeout=120)
            if result.returncode == 0:
                return
            # The kubelet restarts a failing init container with a back-off; the pod waits.
            assert time.monotonic() < deadline, f"init container {container['name']} of {pod.name}: {result.stderr}"
            time.sleep(0.5)

    def _command(
        self, pod: LocalPod, container: Mapping[str, Any], rewrite: Mapping[str, str]
    ) -> tuple[list[str], dict[str, str]]:
        mounts = {m["mountPath"]: pod.mounts[m["name"]] for m in container.get("volumeMounts", [])}

        # One pass, longest path first: a mount's local folder may itself lie below another mount's path (/tmp).
        paths = re.compile(
            "|".join(rf"(?<![\w/.-]){re.escape(p)}(?=/|\"|$|\s)" for p in sorted(mounts, key=len, reverse=True))
        )

        def local(text: str) -> str:
            for old, new in rewrite.items():
                text = text.replace(old, new)
            if mounts:
                text = paths.sub(lambda m: str(mounts[m.group(0)]), text)
            text = text.replace("0.0.0.0:", "127.0.0.1:")
            return re.sub(r"(?<=[:=])(\d{4,5})\b", lambda m: str(pod.ports.get(int(m.group(1)), m.group(1))), text)

        command = [str(part) for part in container["command"]]
        if command[0] == "python":
            command[0] = pod.python
        elif (_BIN / command[0]).exists():
            command[0] = str(_BIN / command[0])
        argv = [*command[:1], *(local(part) for part in command[1:]), *(local(a) for a in container.get("args", []))]
        env = {e["name"]: local(str(e["value"])) for e in container.get("env", [])}
        tmp = mounts.get("/tmp")
        if tmp is not None:  # the images' HOME and FLWR_HOME
            env.setdefault("HOME", str(tmp))
            env.setdefault("FLWR_HOME", str(tmp / ".flwr"))
        return argv, env


def project(folder: Path, files: Mapping[str, str], items: list[dict[str, str]] | None) -> None:
    """Write a Secret's or ConfigMap's files into ``folder``, only ``items`` (key -> path) when given; each file
    replaced whole, as the kubelet swaps its projection."""
    chosen = {i["path"]: files[i["key"]] for i in items} if items else dict(files)
    for name, text in chosen.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp"
        staging.write_text(text, encoding="utf-8")
        staging.chmod(0o600)
        staging.replace(target)


def _link_nested_mounts(pod: LocalPod) -> None:
    """A volume mounted inside another's mount path (``/workspace/plan`` in ``/workspace``) appears in that folder."""
    for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
        paths = {m["mountPath"]: pod.mounts[m["name"]] for m in container.get("volumeMounts", [])}
        for path, folder in paths.items():
            parents = [p for p in paths if path.startswith(p.rstrip("/") + "/")]
            if not parents:
                continue
            parent = max(parents, key=len)
            link = paths[parent] / path[len(parent) :].lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(folder, target_is_directory=True)

"""``fleet controller``: bad kubeconfigs are refused; the running command serves /healthz and /metrics and stops
on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import kmock
import pytest
from click.testing import CliRunner

from fleet.cli.controller import command
from tests.fleet.kubeconfig import write_kubeconfig


def test_an_unusable_kubeconfig_exits_2_naming_the_file(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("just text\n", encoding="utf-8")
    result = CliRunner().invoke(command, ["--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 2
    assert str(kubeconfig) in result.output and "expected a usable kubeconfig" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.asyncio
async def test_the_controller_serves_health_and_metrics_and_stops_on_sigterm(
    kmock: kmock.KubernetesEmulator, tmp_path: Path
) -> None:
    # Just what starting needs: the hub CA Secret (the other kinds are absent: kopf waits for them quietly).
    for api, kind, namespaced in [
        ("v1/secrets", "Secret", True),
        ("v1/namespaces", "Namespace", False),
        ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False),
    ]:
        kmock.resources[api] = kmock.ResourceInfo(
            kind=kind, namespaced=namespaced, verbs={"get", "list", "watch", "create", "patch"}
        )
    kubeconfig = write_kubeconfig(tmp_path, str(kmock.servers[0].url).rstrip("/"))
    metrics, health = _free_port(), _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleet", "controller", "--kubeconfig", str(kubeconfig),
        "--metrics-port", str(metrics), "--health-port", str(health),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as session:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{health}/healthz") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, "the controller never became healthy"
                assert process.returncode is None, "the controller exited"
                await asyncio.sleep(0.2)
            async with session.get(f"http://127.0.0.1:{metrics}/metrics") as answer:
                text = await answer.text()
        assert 'fleet_jobs{phase="Running"} 0.0' in text
        assert "fleet_round_duration_seconds_bucket" in text
        # The hub CA was made and stored on first start.
        assert any(key[2] == "fleet-hub-ca" for key in kmock.objects)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=20)
        assert code == 0, (await process.stderr.read()).decode()[-2000:] if process.stderr else ""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

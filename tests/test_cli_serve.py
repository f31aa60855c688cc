"""`inbox-service serve --workers N`: N API processes answering on one port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CommittedDb
from tests.test_cli_dev import _free_port

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def test_serve_runs_several_api_processes_and_stops_on_sigterm(committed_db: CommittedDb) -> None:
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": committed_db.url, "LOG_LEVEL": "WARNING"}
    with subprocess.Popen(
        [sys.executable, "-m", "inbox_service", "serve", "--port", str(port), "--workers", "2"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            deadline = time.monotonic() + 60
            while True:
                assert time.monotonic() < deadline, "the API never became ready"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            # uvicorn's supervisor spawns one child process per API worker
            spawned = [
                p
                for p in _children(process.pid)
                if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
            assert len(spawned) == 2
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.mark.parametrize(
    ("workers", "sig"),
    [
        pytest.param(1, signal.SIGINT, id="one-process-sigint"),
        pytest.param(2, signal.SIGTERM, id="two-processes-sigterm"),
    ],
)
def test_serve_stops_promptly_with_an_open_event_stream(
    committed_db: CommittedDb, workers: int, sig: signal.Signals
) -> None:
    # uvicorn waits for open responses before stopping; a live stream must end, not hold it.
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": committed_db.url, "LOG_LEVEL": "WARNING"}
    token = subprocess.run(
        [sys.executable, "-m", "inbox_service", "create-admin", "--email", "sse@example.com"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    command = [sys.executable, "-m", "inbox_service", "serve", "--port", str(port)]
    with subprocess.Popen(
        [*command, "--workers", str(workers)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            _wait_ready(port)
            with httpx.stream(
                "GET",
                f"http://127.0.0.1:{port}/v1/events/stream",
                headers={"Authorization": f"Bearer {token}"},
                timeout=httpx.Timeout(10),
            ) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(lines) == "retry: 2000"
                stopped_at = time.monotonic()
                process.send_signal(sig)
                rest = list(lines)  # the server ends the stream (a read timeout fails here)
            assert all(not line.startswith("event:") for line in rest)
            assert process.wait(timeout=15) == 0
            assert time.monotonic() - stopped_at < 10
        finally:
            if process.poll() is None:
                for child in _children(process.pid):  # not left behind by the supervisor
                    os.kill(child, signal.SIGKILL)
                process.kill()
                process.wait(timeout=10)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the API never became ready"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)

"""The README's run command: `inbox-service dev` starts everything and Ctrl-C stops it."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def test_dev_serves_ready_api_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "INBOX_SECRET_KEY")}
    with subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inbox_service",
            "dev",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "dev"),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        _check_dev(process, port, tmp_path / "dev")


def _check_dev(process: subprocess.Popen[str], port: int, data_dir: Path) -> None:
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, out), daemon=True).start()
    stderr_tail: list[str] = []
    threading.Thread(target=_lines, args=(process.stderr, _Sink(stderr_tail)), daemon=True).start()
    try:
        key = None
        printed = []
        while key is None:
            line = out.get(timeout=60)
            printed.append(line)
            if "API key (admin):" in line:
                key = line.rsplit(" ", 1)[1].strip()
        assert any(f"http://127.0.0.1:{port}/docs" in line for line in printed)

        base = f"http://127.0.0.1:{port}"
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert me.status_code == 200
        assert me.json()["role"] == "admin"
        assert len(me.json()["inbox_ids"]) == 1  # --demo made an inbox with the admin in it

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, "".join(stderr_tail[-20:])
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()
        assert (data_dir / "secret.key").exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


class _Sink:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def put(self, line: str) -> None:
        self.lines.append(line)

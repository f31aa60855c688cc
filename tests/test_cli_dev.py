"""The README's run command: `inbox-service dev` starts everything and Ctrl-C stops it.

With `--demo` it also runs a demo IMAP server (pymap) whose seeded threads the worker
syncs into conversations within seconds, and an SMTP sink.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from inbox_service.demo import THREADS, demo_messages

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SYNC_DEADLINE_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _dev(port: int, data_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "INBOX_SECRET_KEY")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inbox_service",
            "dev",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_dev_serves_ready_api_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = _free_port()
    with _dev(port, tmp_path / "dev") as process:
        _check_dev(process, port, tmp_path / "dev")
    # Again on the same data: still one demo inbox, now syncing from the new IMAP server.
    port = _free_port()
    with _dev(port, tmp_path / "dev") as process:
        _check_restart(process, port)


def _check_dev(process: subprocess.Popen[str], port: int, data_dir: Path) -> None:
    with _Output(process) as output:
        banner = output.banner()
        key = banner["API key (admin)"]
        assert banner["Docs"] == f"http://127.0.0.1:{port}/docs"
        imap_port = _imap_port(banner)

        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}"}
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        me = httpx.get(f"{base}/v1/me", headers=auth, timeout=10)
        assert me.status_code == 200
        assert me.json()["role"] == "admin"
        assert len(me.json()["inbox_ids"]) == 1  # --demo made an inbox with the admin in it

        # The worker syncs the seeded mailbox; replies join their threads.
        seeded = len(demo_messages(datetime.now(UTC)))
        deadline = time.monotonic() + SYNC_DEADLINE_SECONDS
        while len(_events(base, auth, "message.received")) < seeded:
            assert time.monotonic() < deadline, output.stderr_tail()
            time.sleep(0.2)
        assert len(_events(base, auth, "message.received")) == seeded
        created = _events(base, auth, "conversation.created")
        assert len(created) == THREADS, [e["data"] for e in created]

        # The SMTP sink takes mail and logs one line per message.
        smtp_port = int(banner["SMTP"].split()[0].rsplit(":", 1)[1])
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.sendmail("support@example.com", ["emma.carter@example.net"],
                          b"Subject: Re: Order #48213\r\n\r\nOn its way.\r\n")  # fmt: skip
        while not any("demo SMTP sink: message from <support@example.com>" in line
                      for line in output.stderr):  # fmt: skip
            assert time.monotonic() < deadline, output.stderr_tail()
            time.sleep(0.05)

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, output.stderr_tail()
        assert not (data_dir / "pgdata" / "postmaster.pid").exists()
        assert (data_dir / "secret.key").exists()
        with socket.socket() as s:  # Ctrl-C stopped the demo IMAP server too
            assert s.connect_ex(("127.0.0.1", imap_port)) != 0


def _check_restart(process: subprocess.Popen[str], port: int) -> None:
    with _Output(process) as output:
        banner = output.banner()
        imap_port = _imap_port(banner)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {banner['API key (admin)']}"}
        inboxes = httpx.get(f"{base}/v1/inboxes", headers=auth, timeout=10).json()["items"]
        assert [i["name"] for i in inboxes] == ["Demo Support"]
        assert inboxes[0]["imap"]["port"] == imap_port
        assert inboxes[0]["imap"]["security"] == "none"
        # An open event stream ends on Ctrl-C instead of keeping the API up.
        with httpx.stream("GET", f"{base}/v1/events/stream", headers=auth, timeout=10) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            process.send_signal(signal.SIGINT)
            list(lines)
        assert process.wait(timeout=30) == 0, output.stderr_tail()


def _imap_port(banner: dict[str, str]) -> int:
    """The banner names the demo IMAP server, and it answers with an IMAP greeting."""
    match = re.match(r"127\.0\.0\.1:(\d+) ", banner["IMAP"])
    assert match, banner["IMAP"]
    imap_port = int(match.group(1))
    assert "SMTP" in banner
    with socket.create_connection(("127.0.0.1", imap_port), timeout=5) as s:
        assert s.recv(200).startswith(b"* OK")
    return imap_port


def _events(base: str, auth: dict[str, str], types: str) -> list[dict[str, object]]:
    answer = httpx.get(
        f"{base}/v1/events", params={"types": types, "limit": 200}, headers=auth, timeout=10
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, object]] = answer.json()["items"]
    return items


class _Output:
    """The process's stdout as lines; its stderr kept for failure messages. Leaving kills
    the process if it still runs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.out: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []

    def __enter__(self) -> _Output:
        threading.Thread(target=_lines, args=(self.process.stdout, self.out), daemon=True).start()
        threading.Thread(
            target=_lines, args=(self.process.stderr, _Sink(self.stderr)), daemon=True
        ).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def banner(self) -> dict[str, str]:
        """`  Name: value` lines of the startup banner, up to "Ctrl-C stops everything."."""
        fields: dict[str, str] = {}
        while True:
            try:
                line = self.out.get(timeout=60)
            except queue.Empty:
                raise AssertionError(f"no banner; stderr: {self.stderr_tail()}") from None
            if line.startswith("Ctrl-C stops everything"):
                return fields
            name, sep, value = line.strip().partition(": ")
            if sep:
                fields[name] = value.strip()

    def stderr_tail(self) -> str:
        return "".join(self.stderr[-20:])


class _Sink:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def put(self, line: str) -> None:
        self.lines.append(line)

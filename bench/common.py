"""What the benchmarks share: output, timing, a throwaway PostgreSQL, free ports, percentiles,
processes and their CPU.

The scripts run as `uv run python bench/<name>.py`, so this folder is on `sys.path` and
they import this module as `common`.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inbox_service.embedded_pg import EmbeddedPostgres


def say(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Stopped(BaseException):
    """SIGTERM: unwind like Ctrl-C so every cleanup runs."""


def on_sigterm(_signum: int, _frame: object) -> None:
    raise Stopped


@contextlib.contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    say(f"  {label}: {time.perf_counter() - start:.1f} s")


@contextlib.contextmanager
def throwaway_postgres(name: str, *, keep: bool = False) -> Iterator[tuple[Path, EmbeddedPostgres]]:
    """A temp dir `inbox-bench-<name>-…` with a fast=True PostgreSQL in `pg/` (not started),
    stopped at the end and the dir removed, unless `keep`."""
    from inbox_service.embedded_pg import EmbeddedPostgres

    tmp = Path(tempfile.mkdtemp(prefix=f"inbox-bench-{name}-"))
    with contextlib.ExitStack() as stack:
        if keep:
            stack.callback(say, f"\nkept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        pg = EmbeddedPostgres(tmp / "pg", fast=True)
        stack.callback(pg.stop)
        yield tmp, pg


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} CPUs"


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def cpu_ticks(pids: Sequence[int]) -> int:
    """utime + stime of the processes, in clock ticks (0 for the ones gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return total


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    """SIGTERM, wait, SIGKILL; then whatever is left of its process group (it was started in
    a session of its own, so the group id is its pid and holds nothing else)."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)

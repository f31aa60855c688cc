"""Parse speed: `parse_message` against a bare stdlib `policy.default` parse, same run.

    uv run python bench/parse_speed.py [--mailgen DIR] [-n 2000] [--repeat 3]

Workloads: every file under ../shared/corpora (read in place; LICENSE/README skipped) and a
mailgen corpus (generated into DIR with `../shared/bench/mailgen.py -n N --seed 42` when DIR
does not exist yet). All messages are read into memory first; only parsing is timed.

Contenders, per message:

* `stdlib policy.default` — the anchor of ../shared/bench/README.md: `BytesParser(policy=
  policy.default)`, read Message-ID, Subject, From, Date, then `get_body(("plain", "html"))`
  and `get_content()` (exceptions are caught and counted: that is F3 and the LookupError
  on unknown charsets);
* `parse_message` — the whole of ingest parsing (all headers, every part, attachments,
  HTML-only text, classification, snippet);
* `reference (fast=False)` — parse_message's own policy.default path, for the ratio the
  fast paths buy.

Absolute figures drift between runs on these machines; read the ratios. Rates are per
CPU-second (`time.process_time`), which other load on the machine disturbs far less than
wall-clock time (also printed). Medians of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from email import policy
from email.parser import BytesParser
from pathlib import Path

from inbox_service.ingest import mime

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def corpus_files() -> list[bytes]:
    skip = {"LICENSE", "README", "README.md"}
    paths = sorted(p for p in (SHARED / "corpora").rglob("*") if p.is_file() and p.name not in skip)
    return [p.read_bytes() for p in paths]


def mailgen_files(directory: Path, count: int) -> list[bytes]:
    if not directory.exists():
        generator = SHARED / "bench" / "mailgen.py"
        command = [sys.executable, str(generator), "-n", str(count), "--seed", "42"]
        subprocess.run([*command, "-o", str(directory)], check=True)  # noqa: S603 - fixed args
    return [p.read_bytes() for p in sorted((directory / "Maildir" / "new").iterdir())]


def bare_stdlib(raw: bytes) -> bool:
    """The stdlib anchor; False when it raised."""
    try:
        msg = BytesParser(policy=policy.default).parsebytes(raw)
        for name in ("message-id", "subject", "from", "date"):
            str(msg[name])
        body = msg.get_body(("plain", "html"))
        if body is not None:
            body.get_content()
    except Exception:  # noqa: BLE001 - counted, as the crash probe in RELIABILITY §3 does
        return False
    return True


def ours(raw: bytes) -> bool:
    return mime.parse_message(raw).parse_status != "failed"


def reference(raw: bytes) -> bool:
    limit = 25 * 1024 * 1024
    return mime._parse(raw, max_attachment_bytes=limit, fast=False).parse_status != "failed"


def rate(
    fn: Callable[[bytes], bool], messages: Sequence[bytes], repeat: int
) -> tuple[float, float, int]:
    """Median msg/s over `repeat` runs: per CPU-second and per wall-second; failures."""
    cpu: list[float] = []
    wall: list[float] = []
    failures = 0
    for _ in range(repeat):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        failures = sum(1 for raw in messages if not fn(raw))
        cpu.append(len(messages) / (time.process_time() - start_cpu))
        wall.append(len(messages) / (time.perf_counter() - start_wall))
    return statistics.median(cpu), statistics.median(wall), failures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mailgen", type=Path, default=Path("/tmp/mg"))  # noqa: S108
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    workloads = {
        "corpora": corpus_files(),
        f"mailgen n={args.n}": mailgen_files(args.mailgen, args.n),
    }
    contenders: dict[str, Callable[[bytes], bool]] = {
        "stdlib policy.default": bare_stdlib,
        "parse_message": ours,
        "reference (fast=False)": reference,
    }
    out = sys.stdout
    out.write("msg/s per CPU-second (wall-clock in brackets; the machine is shared), median\n")
    for workload, messages in workloads.items():
        size = sum(map(len, messages)) / 1e6
        out.write(f"\n{workload}: {len(messages)} messages, {size:.1f} MB\n")
        baseline = None
        for name, fn in contenders.items():
            cpu, wall, failures = rate(fn, messages, args.repeat)
            baseline = baseline or cpu
            out.write(
                f"  {name:24} {cpu:7.0f} msg/s ({wall:5.0f})  x{cpu / baseline:4.2f}"
                f"  raised/failed: {failures}\n"
            )


if __name__ == "__main__":
    main()

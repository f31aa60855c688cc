"""Locating the real external tools the frontend tests drive (Chromium, node, npm).

Locally a missing tool skips the test with the reason; in CI (`CI=true`, where `.ci/run`
installs them) it fails, so a broken install never passes as "skipped"."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def require_tool(name: str, *candidates: str) -> str:
    for candidate in (name, *candidates):
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    message = f"{name} is not installed (`apt-get install {name}`; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def chromium_args() -> list[str]:
    args = [
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
    ]
    if os.geteuid() == 0:  # Chromium's sandbox refuses to run as root
        args.append("--no-sandbox")
    return args

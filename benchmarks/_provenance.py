"""The git commit a benchmark row was measured on, read in one place for every benchmark script."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit(paths: Sequence[str], *, digits: int | None = None, untracked: bool = True, timeout: float = 10.0) -> str:
    """``HEAD``'s abbreviated commit (``digits`` hex digits, git's default when ``None``), with ``+dirty``
    when ``paths`` (git pathspecs) have uncommitted changes -- untracked files counted unless
    ``untracked`` is false; ``"unknown"`` outside a git checkout."""
    short = "--short" if digits is None else f"--short={digits}"
    status = ["status", "--porcelain", *([] if untracked else ["--untracked-files=no"]), "--", *paths]
    try:
        head = subprocess.run(["git", "rev-parse", short, "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", *status], cwd=ROOT, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")

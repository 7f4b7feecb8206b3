"""The scale benchmarks' memory figures: the sampler counts every process a run started, including one
that outlived its parent (re-parented to init, as Flower's detached SuperExec and Ray's daemons can
be), and the memory it touched."""

from __future__ import annotations

import subprocess
import sys
import time

from benchmarks._process_tree import TreeSampler

# the child starts a grandchild in a session of its own, then exits; the grandchild touches 200 MiB
GRANDCHILD = "import time; block = bytearray(200 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(4)"
CHILD = (
    "import subprocess, sys, time; "
    f"subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}], start_new_session=True); time.sleep(1)"
)


def test_an_orphaned_grandchild_and_its_memory_are_counted() -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD], start_new_session=True)
    sampler = TreeSampler(proc.pid, interval=0.1, role=lambda cmd: "child" if "import subprocess" in cmd else "grandchild")
    sampler.start()
    proc.wait(timeout=30)
    time.sleep(3)  # the grandchild lives on, re-parented
    stats = sampler.finish()
    assert stats.peak_processes == 2
    assert stats.peak_pss_mb >= 200 and stats.peak_rss_mb >= stats.peak_pss_mb
    assert stats.roles["grandchild"]["max_process_pss_mb"] >= 200
    assert stats.roles["child"]["processes"] == 1
    late = [n for t, _rss, _pss, n in stats.series if t > 1.5]  # after the child exited
    assert late and max(late) == 1  # the orphan alone, still sampled

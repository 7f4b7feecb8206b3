"""What a process tree holds while it runs, read from ``/proc`` (Linux): memory, processes, files, CPU.

The scale benchmarks start a run (a Flower simulation, a SuperLink with its SuperNodes, an in-process
run) as a child in its own session and sample every process it started, however deep: the child's
descendants, plus any process in a session one of them opened (a daemon that outlived its parent is
re-parented to init but keeps its session). Each sample sums, over those processes:

* RSS (``VmRSS``): what ``/usr/bin/time -v`` reports per process; summed over processes it counts the
  pages they share (the Python interpreter, torch's libraries) once per process: an upper bound;
* PSS (``Pss`` of ``smaps_rollup``): shared pages split among the processes sharing them; summed, the
  memory the tree really occupies (what the machine would get back if the tree ended);
* open file descriptors and processes (what ``ulimit -n`` and ``ulimit -u`` bound).

CPU seconds are each process's ``utime + stime`` as last seen, summed over every process seen (a
process that lives shorter than the sampling interval is missed: a lower bound).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(ppid, session id, CPU seconds) of ``pid``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    # fields[0] is field 3 (state): ppid = field 4, session = field 6, utime/stime = fields 14/15
    return int(fields[1]), int(fields[3]), (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _kib(path: str, key: str) -> int:
    """The ``key:`` line of a ``/proc`` status file, in KiB (0 when absent or gone)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def mem_available_mb() -> float:
    """The machine's ``MemAvailable`` (MiB): what new work can take without swapping or the OOM killer."""
    return _kib("/proc/meminfo", "MemAvailable:") / 1024.0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


@dataclass
class TreeStats:
    """Peaks over the samples of one tree (MiB, counts, seconds)."""

    peak_rss_mb: float = 0.0
    peak_pss_mb: float = 0.0
    peak_processes: int = 0
    peak_fds: int = 0
    cpu_s: float = 0.0
    samples: int = 0
    series: list[tuple[float, float, float, int]] = field(default_factory=list)
    """(seconds since start, RSS MiB, PSS MiB, processes) per sample."""
    roles: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per role (when the sampler has a ``role`` function): peaks over samples of the role's summed
    PSS and RSS (``pss_mb``, ``rss_mb``), process count and open files, and the largest single
    process's PSS and RSS (``max_process_pss_mb``, ``max_process_rss_mb``)."""
    min_mem_available_mb: float = float("inf")


class TreeSampler(threading.Thread):
    """Sample the tree under ``root_pid`` every ``interval`` seconds until :meth:`finish`.

    ``pss=False`` skips ``smaps_rollup`` (the slowest read) for trees of hundreds of processes.
    ``role(cmdline)`` names each process's role for the per-role peaks (``TreeStats.roles``).
    ``on_sample(sampler)`` is called after every sample (e.g. a memory guard that stops the tree).
    """

    def __init__(
        self,
        root_pid: int,
        interval: float = 0.5,
        *,
        pss: bool = True,
        role: Callable[[str], str] | None = None,
        on_sample: Callable[[TreeSampler], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.root = root_pid
        self.interval = interval
        self.pss = pss
        self.role = role
        self.on_sample = on_sample
        self.stats = TreeStats()
        self._cpu: dict[int, float] = {}
        self._sessions: set[int] = set()
        self._own_session = os.getsid(0)
        self._stop_event = threading.Event()
        self._t0 = time.monotonic()

    def members(self) -> list[int]:
        """The root, its descendants and the processes in their sessions (never this session)."""
        table: dict[int, tuple[int, int, float]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                info = _stat(int(entry.name))
                if info is not None:
                    table[int(entry.name)] = info
        children: dict[int, list[int]] = {}
        for pid, (ppid, _sid, _cpu) in table.items():
            children.setdefault(ppid, []).append(pid)
        found, stack = set(), [self.root]
        while stack:
            pid = stack.pop()
            if pid in found or pid not in table:
                continue
            found.add(pid)
            stack.extend(children.get(pid, []))
        self._sessions |= {table[pid][1] for pid in found} - {self._own_session}
        found |= {pid for pid, (_p, sid, _c) in table.items() if sid in self._sessions}
        for pid in found:
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), table[pid][2])
        return sorted(found)

    def sample(self) -> None:
        pids = self.members()
        rss_of = {pid: _kib(f"/proc/{pid}/status", "VmRSS:") / 1024.0 for pid in pids}
        pss_of = {pid: _kib(f"/proc/{pid}/smaps_rollup", "Pss:") / 1024.0 if self.pss else 0.0 for pid in pids}
        fds_of = {pid: _fds(pid) for pid in pids}
        rss, pss = sum(rss_of.values()), sum(pss_of.values())
        s = self.stats
        s.peak_rss_mb, s.peak_pss_mb = max(s.peak_rss_mb, rss), max(s.peak_pss_mb, pss)
        s.peak_processes, s.peak_fds = max(s.peak_processes, len(pids)), max(s.peak_fds, sum(fds_of.values()))
        s.cpu_s = sum(self._cpu.values())
        s.samples += 1
        s.series.append((time.monotonic() - self._t0, rss, pss, len(pids)))
        s.min_mem_available_mb = min(s.min_mem_available_mb, mem_available_mb())
        if self.role is not None:
            totals: dict[str, dict[str, float]] = {}
            for pid in pids:
                t = totals.setdefault(self.role(_cmdline(pid)), {"pss_mb": 0.0, "rss_mb": 0.0, "processes": 0, "fds": 0,
                                                                 "max_process_pss_mb": 0.0, "max_process_rss_mb": 0.0})
                t["pss_mb"] += pss_of[pid]
                t["rss_mb"] += rss_of[pid]
                t["processes"] += 1
                t["fds"] += fds_of[pid]
                t["max_process_pss_mb"] = max(t["max_process_pss_mb"], pss_of[pid])
                t["max_process_rss_mb"] = max(t["max_process_rss_mb"], rss_of[pid])
            for name, t in totals.items():
                peak = s.roles.setdefault(name, dict.fromkeys(t, 0.0))
                for key, value in t.items():
                    peak[key] = max(peak[key], value)
        if self.on_sample is not None:
            self.on_sample(self)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def finish(self) -> TreeStats:
        """Stop sampling (one last sample first) and return the peaks."""
        self._stop_event.set()
        self.join(timeout=30)
        self.sample()
        return self.stats

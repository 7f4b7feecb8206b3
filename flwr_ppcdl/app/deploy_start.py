"""Bringing many SuperNodes up (:meth:`flwr_ppcdl.app.deploy.LocalDeployment.start`): the SuperLink,
every node's key registered several at a time (each ``flwr supernode register`` is a CLI process of
about a second of CPU), the SuperNodes started (optionally staggered), then a wait until the
SuperLink reports every one online: a run submitted earlier may find too few, and the ServerApp
gives up on nodes that stop arriving (``server_app.NODE_STALL_SECONDS``)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from flwr_ppcdl.app.deploy_setup import FEDERATION, flower_bin, free_port, online_node_ids

if TYPE_CHECKING:
    from flwr_ppcdl.app.deploy import LocalDeployment


def start_all(deployment: LocalDeployment, *, stagger: float = 0.0, workers: int = 1,
              online_timeout: float = 600.0) -> dict[str, float]:
    """Start ``deployment``; return the seconds of each phase: ``superlink``, ``register`` (with
    node authentication), ``supernodes`` (``stagger`` seconds between starts), ``online``."""
    timings: dict[str, float] = {}
    deployment.write_federation()
    began = time.monotonic()
    deployment.start_superlink()
    timings["superlink"] = time.monotonic() - began
    if deployment.node_auth:
        began = time.monotonic()
        register_nodes(deployment, range(deployment.nodes), workers=workers)
        timings["register"] = time.monotonic() - began
    began = time.monotonic()
    for pid in range(deployment.nodes):
        deployment.start_supernode(pid)
        if stagger > 0:
            time.sleep(stagger)
    timings["supernodes"] = time.monotonic() - began
    timings["online"] = wait_online(deployment, deployment.nodes, timeout=online_timeout)
    return timings


def new_port(taken: set[int]) -> int:
    """A free port on 127.0.0.1 that is not in ``taken`` (then added to it): one per SuperNode."""
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


def register_nodes(deployment: LocalDeployment, partition_ids: Iterable[int], *, workers: int = 1) -> dict[int, int]:
    """Register several partitions' keys, ``workers`` CLI processes at a time; {partition: node id}."""
    ids = list(partition_ids)
    for pid in ids:  # every key generated first, in this thread
        deployment.node_key(pid)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(ids, pool.map(deployment.register_node, ids), strict=True))


def online_nodes(deployment: LocalDeployment) -> set[int]:
    """Ids of the SuperNodes the SuperLink reports online now (``flwr supernode list``)."""
    cmd = [flower_bin("flwr"), "supernode", "list", FEDERATION, "--format", "json"]
    done = subprocess.run(cmd, cwd=deployment.workdir, env=deployment.env(), capture_output=True, text=True, timeout=120)
    return online_node_ids(done.stdout)


def wait_online(deployment: LocalDeployment, count: int, timeout: float = 600.0) -> float:
    """Wait until at least ``count`` SuperNodes are online; return the seconds waited.

    Raises ``TimeoutError`` saying how many were online, ``RuntimeError`` (with the end of its log)
    when a SuperNode exited meanwhile."""
    began = time.monotonic()
    online: set[int] = set()
    while time.monotonic() - began < timeout:
        online = online_nodes(deployment)
        if len(online) >= count:
            return time.monotonic() - began
        for name, proc in deployment.procs.items():
            if name.startswith("supernode-") and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{deployment.logs[name].read_text()[-2000:]}")
        time.sleep(1.0)
    raise TimeoutError(f"{len(online)} of {count} SuperNodes online after {timeout:.0f}s")

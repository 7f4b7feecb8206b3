"""What a local deployment prepares before any process starts -- the checked run config, the TLS
certificates, the SuperNodes' authentication keys, the app snapshot, free ports -- and the small
helpers it reads processes and the CLI's output with (used by :mod:`flwr_ppcdl.app.deploy`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from flwr_ppcdl.app.settings import RunSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FEDERATION = "ppcdl-local"
"""The name of the local SuperLink connection in ``$FLWR_HOME/config.toml``."""


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_app(dest: Path, source: Path = PROJECT_ROOT) -> Path:
    """Copy the Flower App (pyproject.toml + the package) to ``dest``: a snapshot to run, so the
    FAB holds only the app and later edits in the checkout cannot change a running test.

    ``fab-exclude`` is dropped from the copy: Flower rejects patterns that match no file, and the
    copy has no tests/, docs/, ... (the checkout itself runs as is: ``flwr run .``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "flwr_ppcdl", dest / "flwr_ppcdl", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    lines = (source / "pyproject.toml").read_text().splitlines()
    (dest / "pyproject.toml").write_text("\n".join(line for line in lines if not line.startswith("fab-exclude")) + "\n")
    return dest


def flower_bin(name: str) -> str:
    """A Flower command (``flwr``, ``flower-superlink``...) of this Python environment, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def ancestor_pids() -> set[int]:
    """This process's PID and those of its parents (never to be stopped as stragglers)."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4 (ppid), after "(comm)"
    return pids


def run_settings(run_config: str, app: Path = PROJECT_ROOT) -> RunSettings:
    """The settings ``flwr run <app> --run-config run_config`` will use: the app's
    ``[tool.flwr.app.config]`` defaults with the overrides parsed as Flower parses them."""
    import tomli  # Flower's own TOML reader (Python 3.10 has no tomllib)
    from flwr.common.config import parse_config_args

    declared = tomli.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return RunSettings.from_config({**declared, **parse_config_args([run_config])})


def refuse_insecure_run(settings: RunSettings) -> None:
    """The deployment runtime runs private participants only: refuse predictable noise."""
    if settings.reproducible_noise:
        raise ValueError(
            f"insecure-noise-seed={settings.insecure_noise_seed} is refused by the deployment runtime: "
            "it makes every participant's noise predictable from the run config (NOT private); "
            "use it only in simulations on public data"
        )


def make_node_keys(folder: Path) -> tuple[Path, Path]:
    """A SuperNode's EC P-384 key pair in OpenSSH format (what Flower 1.42 reads); (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / "supernode_key", folder / "supernode_key.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    return private, public


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """Generate a CA and a server certificate (SAN 127.0.0.1, localhost); return (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flwr-ppcdl local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.crt", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def _printed_json(stdout: str) -> dict[str, Any]:
    """The JSON object a ``flwr ... --format json`` command printed (after any other output); ``{}`` if none."""
    start = stdout.find("{")
    try:
        data = json.loads(stdout[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def registered_node_id(stdout: str) -> int | None:
    """The ``node-id`` of ``flwr supernode register --format json`` output, if any."""
    data = _printed_json(stdout)
    return int(data["node-id"]) if data.get("success") and "node-id" in data else None


def online_node_ids(stdout: str) -> set[int]:
    """Ids of the nodes whose ``status`` is ``online`` in ``flwr supernode list --format json`` output."""
    nodes = _printed_json(stdout).get("nodes")
    if not isinstance(nodes, list):
        return set()
    return {int(n["node-id"]) for n in nodes if isinstance(n, dict) and n.get("status") == "online" and "node-id" in n}


def started_run_id(output: str) -> int | None:
    """The id of the last run ``flwr run`` printed (``Successfully started run <id>``), if any."""
    found = re.findall(r"Successfully started run (\d+)", output)
    return int(found[-1]) if found else None


def run_status_of(stdout: str) -> str | None:
    """The ``status`` of the one run in ``flwr ls --run-id <id> --format json`` output (e.g. ``finished:failed``)."""
    runs = _printed_json(stdout).get("runs")
    return str(runs[0]["status"]) if isinstance(runs, list) and runs and isinstance(runs[0], dict) and "status" in runs[0] else None

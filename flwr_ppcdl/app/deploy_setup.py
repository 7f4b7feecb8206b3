"""What a local deployment prepares before any process starts: the checked run config, the TLS
certificates and the SuperNodes' authentication keys (used by :mod:`flwr_ppcdl.app.deploy`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

from flwr_ppcdl.app.settings import RunSettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


def registered_node_id(stdout: str) -> int | None:
    """The ``node-id`` of ``flwr supernode register --format json`` output, if any."""
    start = stdout.find("{")
    try:
        data = json.loads(stdout[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        return None
    return int(data["node-id"]) if isinstance(data, dict) and data.get("success") and "node-id" in data else None

"""The PKI a local kube-apiserver needs: a CA, a serving cert, an admin client cert, SA keys."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _issue(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, server_ips: tuple[str, ...] = ()) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server_ips:
        addresses = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), *addresses]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path, serving_ips: tuple[str, ...] = ()) -> dict[str, Path]:
    """Write every key and certificate into `directory` and return their paths by role.

    The serving certificate holds 127.0.0.1 and `serving_ips` (a local node's pods reach the
    apiserver through a relay on their bridge's gateway address)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.pem" for name in
             ("ca", "ca-key", "serving", "serving-key", "admin", "admin-key", "sa-key", "sa-pub")}
    ca_key = _key()
    ca_name = _name("modelrollout-devstack-ca")
    ca_cert = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    serving_key, admin_key, sa_key = _key(), _key(), _key()
    _write_cert(ca_cert, paths["ca"])
    _write_key(ca_key, paths["ca-key"])
    _write_cert(_issue(_name("kube-apiserver"), serving_key, ca_name, ca_key, ca=False,
                       server_ips=("127.0.0.1", *serving_ips)), paths["serving"])
    _write_key(serving_key, paths["serving-key"])
    _write_cert(_issue(_name("admin", "system:masters"), admin_key, ca_name, ca_key, ca=False), paths["admin"])
    _write_key(admin_key, paths["admin-key"])
    _write_key(sa_key, paths["sa-key"])
    paths["sa-pub"].write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return paths

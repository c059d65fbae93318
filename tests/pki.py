"""A throw-away PKI for TLS tests, made with ``cryptography`` (no openssl subprocess, ~ms per cert).

Typical use::

    pki = Pki(tmp_path / "pki")           # site CA, an unrelated "unknown" CA, a localhost server cert
    pki.site_ca.cert                      # Path of the CA certificate a gateway pins (ca_file)
    pki.server                            # CertFiles(cert, key) for 127.0.0.1 / localhost / ::1
    pki.client("hub-a")                   # CertFiles for a hub whose certificate CN is its gateway id
    pki.client("hub-a", expired=True)     # the same hub, certificate expired yesterday
    pki.unknown_ca.issue_client("hub-a")  # a certificate from a CA nobody trusts
    pki.site_ca.issue_server("wrong", hosts=["broker.other.example"])  # valid, wrong host name
    pki.site_ca.crl([pki.client("hub-b")])  # a CRL revoking hub-b (Mosquitto ``crlfile``)
    pki.tls_files("gw-test")              # the ``TlsFiles`` bundle ``MosquittoBroker(tls=...)`` takes

Every file is PEM, written under the directory given; keys are ECDSA P-256, unencrypted, mode 0600.
Certificates are valid from one hour ago (clock skew) to ``days`` from now unless ``expired=True``
(then from 10 days ago to 1 day ago).  Client certificates carry ``extendedKeyUsage=clientAuth`` and
server certificates ``serverAuth`` with the host names and IP addresses as subjectAltName, as a site
CA should issue them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS broker and one client need (``tests.broker.MosquittoBroker(tls=...)``)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class CertFiles:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path
    serial: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _validity(days: int, expired: bool) -> tuple[dt.datetime, dt.datetime]:
    now = _now()
    if expired:
        return now - dt.timedelta(days=10), now - dt.timedelta(days=1)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=days)


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class CertificateAuthority:
    """A self-signed CA in ``directory`` (``<name>.crt`` / ``<name>.key``) that issues certificates.

    ``issue_server`` and ``issue_client`` write ``<file_name>.crt`` and ``<file_name>.key`` next to
    the CA's files and return them; the same file name issued twice is overwritten.
    """

    def __init__(self, directory: Path, name: str = "site-ca", *, days: int = 30) -> None:
        self.directory = directory
        self.name = name
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        start, end = _validity(days, expired=False)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.cert = directory / f"{name}.crt"
        self.key = directory / f"{name}.key"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        _write_key(self.key, self._key)

    def _issue(
        self,
        file_name: str,
        common_name: str,
        *,
        usage: x509.ObjectIdentifier,
        hosts: Sequence[str] = (),
        days: int,
        expired: bool,
    ) -> CertFiles:
        key = ec.generate_private_key(ec.SECP256R1())
        start, end = _validity(days, expired)
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        files = CertFiles(self.directory / f"{file_name}.crt", self.directory / f"{file_name}.key", serial)
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(files.key, key)
        return files

    def issue_server(
        self,
        file_name: str = "server",
        *,
        hosts: Sequence[str] = DEFAULT_SERVER_HOSTS,
        days: int = 30,
        expired: bool = False,
    ) -> CertFiles:
        """A broker certificate valid for ``hosts`` (DNS names or IP addresses, as subjectAltName)."""
        return self._issue(
            file_name, hosts[0], usage=ExtendedKeyUsageOID.SERVER_AUTH, hosts=hosts, days=days, expired=expired
        )

    def issue_client(
        self, common_name: str, *, file_name: str | None = None, days: int = 30, expired: bool = False
    ) -> CertFiles:
        """A hub certificate whose CN is ``common_name`` (the gateway id: Mosquitto's username
        under ``use_identity_as_username``).  Files default to ``<common_name>[-expired].crt/.key``."""
        name = file_name or (f"{common_name}-expired" if expired else common_name)
        return self._issue(name, common_name, usage=ExtendedKeyUsageOID.CLIENT_AUTH, days=days, expired=expired)

    def crl(self, revoked: Iterable[CertFiles], file_name: str | None = None, *, expired: bool = False) -> Path:
        """A CRL signed by this CA listing ``revoked`` (written to ``<name>.crl``; empty if none);
        ``expired``: its next update was yesterday."""
        now = _now()
        last, nxt = (now - dt.timedelta(days=8), now - dt.timedelta(days=1)) if expired else \
            (now - dt.timedelta(hours=1), now + dt.timedelta(days=7))
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(last)
            .next_update(nxt)
        )
        for files in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(files.serial).revocation_date(now).build()
            )
        path = self.directory / f"{file_name or self.name}.crl"
        path.write_bytes(builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        return path


class Pki:
    """A site PKI for one test: ``site_ca`` (trusted), ``unknown_ca`` (trusted by nobody) and
    ``server``, a broker certificate from the site CA for localhost / 127.0.0.1 / ::1.

    ``client(hub_id)`` issues (once, then cached) the hub's certificate from the site CA.
    """

    def __init__(self, directory: Path, *, days: int = 30) -> None:
        self.directory = directory
        self.site_ca = CertificateAuthority(directory / "site", "site-ca", days=days)
        self.unknown_ca = CertificateAuthority(directory / "unknown", "unknown-ca", days=days)
        self.server = self.site_ca.issue_server("server", days=days)
        self._clients: dict[tuple[str, bool], CertFiles] = {}

    def client(self, hub_id: str, *, expired: bool = False) -> CertFiles:
        key = (hub_id, expired)
        if key not in self._clients:
            self._clients[key] = self.site_ca.issue_client(hub_id, expired=expired)
        return self._clients[key]

    def tls_files(self, hub_id: str = "gw-test") -> TlsFiles:
        """The bundle ``tests.broker.MosquittoBroker(tls=...)`` takes, with ``hub_id``'s client cert."""
        client = self.client(hub_id)
        return TlsFiles(self.site_ca.cert, self.server.cert, self.server.key, client.cert, client.key)

"""A private PKI for tests: a root CA, an intermediate, server and client certificates.

Everything is made with ``cryptography`` in memory and written as PEM files, the
way an operator's private CA (or cert-manager) would hand them to the mirror::

    ca = PrivateCA.create(tmp_path / "pki")
    server = ca.issue_server("127.0.0.1", "localhost")     # leaf + intermediate chain
    server.write(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ca.issue_client("alice")
    context = ca.issue_server("127.0.0.1").server_context(tmp_path / "up")  # an in-process server

Keys are EC P-256 (fast to make); :meth:`PrivateCA.issue_server` can make RSA too.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh EC P-256 (``"ec"``) or RSA-2048 (``"rsa"``) private key."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """``key`` as PKCS#8 PEM, encrypted when ``password`` is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def cert_pem(*certs: x509.Certificate) -> bytes:
    """The certificates as one PEM bundle, in the order given."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass(frozen=True)
class Issued:
    """A certificate, its key and the chain above it (intermediates, not the root)."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def serial(self) -> int:
        """The certificate's serial number (tests compare it to what a client saw)."""
        return self.cert.serial_number

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write the leaf followed by its chain, and the key, as PEM files."""
        cert_path.write_bytes(cert_pem(self.cert, *self.chain))
        key_path.write_bytes(key_pem(self.key))
        key_path.chmod(0o600)

    def server_context(self, directory: Path) -> ssl.SSLContext:
        """A TLS server context presenting this certificate and its chain.

        ``ssl`` loads certificates only from files: they are written to
        ``directory`` as ``tls.crt`` and ``tls.key``.
        """
        directory.mkdir(parents=True, exist_ok=True)
        self.write(directory / "tls.crt", directory / "tls.key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
        return context


@dataclass(frozen=True)
class PrivateCA:
    """A root CA and an intermediate CA under it; leaves are issued by the intermediate."""

    root: Issued
    intermediate: Issued
    root_path: Path

    @classmethod
    def create(cls, directory: Path, name: str = "registry-mirror test") -> PrivateCA:
        """A new root and intermediate; the root certificate is written to ``directory/ca.crt``."""
        directory.mkdir(parents=True, exist_ok=True)
        root_key = new_key()
        root_cert = _build(
            _name(f"{name} root CA"), root_key, _name(f"{name} root CA"), root_key, ca=True
        )
        root = Issued(root_cert, root_key)
        inter_key = new_key()
        inter_cert = _build(
            _name(f"{name} intermediate CA"), inter_key, root_cert.subject, root_key, ca=True
        )
        path = directory / "ca.crt"
        path.write_bytes(cert_pem(root_cert))
        return cls(root, Issued(inter_cert, inter_key, (root_cert,)), path)

    def issue_server(
        self,
        *hosts: str,
        key_kind: str = "ec",
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Issued:
        """A server certificate for ``hosts`` (DNS names or IP addresses), chain included."""
        key = new_key(key_kind)
        names: list[x509.GeneralName] = []
        for host in hosts or ("127.0.0.1", "localhost"):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = _build(
            _name(hosts[0] if hosts else "127.0.0.1"), key, self.intermediate.cert.subject,
            self.intermediate.key, ca=False, san=names, usage=ExtendedKeyUsageOID.SERVER_AUTH,
            not_before=not_before, not_after=not_after,
        )  # fmt: skip
        return Issued(cert, key, (self.intermediate.cert,))

    def issue_client(self, common_name: str) -> Issued:
        """A client certificate (for mutual TLS), chain included."""
        key = new_key()
        cert = _build(
            _name(common_name), key, self.intermediate.cert.subject, self.intermediate.key,
            ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )  # fmt: skip
        return Issued(cert, key, (self.intermediate.cert,))


def _build(
    subject: x509.Name,
    key: PrivateKey,
    issuer: x509.Name,
    issuer_key: PrivateKey,
    *,
    ca: bool,
    san: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or _now() - _DAY)
        .not_valid_after(not_after or _now() + 30 * _DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())

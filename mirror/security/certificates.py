"""Checks on the mirror's own TLS certificate files, before OpenSSL sees them.

OpenSSL accepts a chain in the wrong order, an expired certificate or a key
that belongs to another certificate, and the operator finds out from a
client's handshake error. These checks say what is wrong, and in which file,
at start-up (``check-config``) and before a reloaded certificate is put in use.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

Part = Literal["cert", "key", "client_ca"]

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class CertificateProblem(ValueError):
    """A certificate or key file cannot serve; ``part`` says which file."""

    def __init__(self, part: Part, message: str) -> None:
        super().__init__(message)
        self.part = part


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """What the checks learned about a certificate chain, for logs and ``check-config``."""

    subject: str
    names: tuple[str, ...]
    not_after: datetime.datetime
    chain_length: int

    def describe(self, now: datetime.datetime) -> str:
        """``CN=…, for a, b; expires 2026-… (in 29 days); chain of 2``."""
        days = (self.not_after - now).days
        names = f", for {', '.join(self.names)}" if self.names else ""
        return (
            f"{self.subject}{names}; expires {self.not_after:%Y-%m-%d %H:%M}Z "
            f"(in {days} days); chain of {self.chain_length}"
        )


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def load_certificates(pem: bytes, part: Part) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in file order; at least one."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise CertificateProblem(part, "no PEM certificate in it") from None
    return certs


def check_validity(certs: list[x509.Certificate], part: Part, now: datetime.datetime) -> None:
    """Every certificate is inside its validity period."""
    for index, cert in enumerate(certs, 1):
        where = f"certificate {index} of {len(certs)} ({_label(cert)})"
        if cert.not_valid_after_utc <= now:
            raise CertificateProblem(
                part, f"{where} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z"
            )
        if cert.not_valid_before_utc > now:
            raise CertificateProblem(
                part, f"{where} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
            )


def check_chain_order(certs: list[x509.Certificate]) -> None:
    """Each certificate is issued (and signed) by the one after it."""
    for index, (cert, issuer) in enumerate(itertools.pairwise(certs), 1):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise CertificateProblem(
                "cert",
                f"certificate {index + 1} ({_label(issuer)}) did not issue certificate {index} "
                f"({_label(cert)}): put the server certificate first, then each issuer in order",
            ) from None


def _check_server_usage(leaf: x509.Certificate) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.SERVER_AUTH not in usage and (
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usage
    ):
        raise CertificateProblem(
            "cert", f"certificate 1 ({_label(leaf)}) is not for TLS servers (extendedKeyUsage)"
        )


def load_private_key(pem: bytes) -> PrivateKeyTypes:
    """The unencrypted private key of a PEM file."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise CertificateProblem(
            "key", "the key is encrypted: give the mirror an unencrypted key (and protect "
            "the file with its permissions)",
        ) from None  # fmt: skip
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateProblem("key", "no PEM private key in it") from None
    return key


def _names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return (*dns, *ips)


def check_server_files(
    cert_pem: bytes, key_pem: bytes, now: datetime.datetime
) -> ServerCertificate:
    """Check ``tls.cert`` and ``tls.key``; :class:`CertificateProblem` at the first failure."""
    certs = load_certificates(cert_pem, "cert")
    check_validity(certs, "cert", now)
    check_chain_order(certs)
    _check_server_usage(certs[0])
    key = load_private_key(key_pem)
    if key.public_key().public_bytes(*_SPKI) != certs[0].public_key().public_bytes(*_SPKI):
        raise CertificateProblem(
            "key", f"the key does not belong to certificate 1 ({_label(certs[0])})"
        )
    return ServerCertificate(
        subject=_label(certs[0]),
        names=_names(certs[0]),
        not_after=certs[0].not_valid_after_utc,
        chain_length=len(certs),
    )


def check_client_ca(pem: bytes, now: datetime.datetime) -> int:
    """The checks for ``tls.client_ca``: CA certificates in their validity; how many."""
    certs = load_certificates(pem, "client_ca")
    check_validity(certs, "client_ca", now)
    for index, cert in enumerate(certs, 1):
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CertificateProblem(
                "client_ca", f"certificate {index} ({_label(cert)}) is not a CA certificate"
            )
    return len(certs)

"""The station's own key and client certificate (security profile 3).

SignCertificate: a new EC P-256 key is generated and kept as the *pending* key; the CSR carries
the station id as CN and the CSMS's organization (CpoName) as O. CertificateSigned: the chain is
accepted only when its leaf certifies the pending key (or the current one, for a re-sent chain),
is valid now and is a client certificate for this station; the pair then becomes the client
certificate used for TLS. Files per station, under ``<store>/stations/<id>/``::

    pending-key.pem   key of the last CSR (0600)
    client.pem        the installed client identity: key, then certificate chain (0600)

Key and chain live in one file, replaced atomically, so a crash can never pair a new key with an
old chain (which would lock a profile 3 station out); ``SSLContext.load_cert_chain`` reads both.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bess_gateway.security.certificates import (
    CertificateError,
    is_valid_now,
    parse_pem_chain,
    write_atomically,
)

log = logging.getLogger("bess_gateway.security")

SignedStatus = Literal["Accepted", "Rejected"]


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> bool:
    if key is None:
        return False
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


class StationKeys:
    def __init__(self, directory: Path, station_id: str) -> None:
        self.station_id = station_id
        self.directory = Path(directory)
        self.pending_path = self.directory / "pending-key.pem"
        self.identity_path = self.directory / "client.pem"

    def csr(self, organization: str) -> str:
        """A new key pair and its PEM CSR (CN = station id, O = the CPO's name)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.NameAttribute(NameOID.COMMON_NAME, self.station_id)]
        if organization:
            names.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        request = (x509.CertificateSigningRequestBuilder()
                   .subject_name(x509.Name(names))
                   .sign(key, hashes.SHA256()))
        write_atomically(self.pending_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), 0o600)
        return request.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def accept_chain(self, pem: str, max_size: int) -> tuple[SignedStatus, str]:
        """CertificateSigned: install the chain if it certifies our key; (status, reason)."""
        if len(pem) > max_size:
            return "Rejected", f"chain of {len(pem)} characters exceeds {max_size}"
        try:
            chain = parse_pem_chain(pem)
        except CertificateError as e:
            return "Rejected", str(e)
        leaf = chain[0]
        if not is_valid_now(leaf, datetime.now(UTC)):
            return "Rejected", "certificate is expired or not yet valid"
        cns = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if cns != [self.station_id]:
            return "Rejected", f"certificate CN {cns} is not the station id {self.station_id}"
        key = next((k for k in (_load_key(self.pending_path), _load_key(self.identity_path))
                    if _same_key(leaf, k)), None)
        if key is None:
            return "Rejected", "certificate does not match the key of our last CSR"
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        try:
            write_atomically(self.identity_path, key_pem + chain_pem, 0o600)
            self.pending_path.unlink(missing_ok=True)
        except OSError as e:
            return "Rejected", f"cannot store the certificate: {e}"
        log.info("%s: client certificate installed (serial %x, valid until %s)",
                 self.station_id, leaf.serial_number, leaf.not_valid_after_utc.isoformat())
        return "Accepted", ""

    def identity(self) -> Path | None:
        """The installed client identity (key + chain, for ``load_cert_chain``), if any."""
        return self.identity_path if self.identity_path.is_file() else None

    def chain(self) -> list[x509.Certificate]:
        """The installed client certificate chain, leaf first (empty when none)."""
        try:
            return parse_pem_chain(self.identity_path.read_text())
        except (OSError, CertificateError):
            return []

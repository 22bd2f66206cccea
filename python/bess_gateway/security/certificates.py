"""The certificate store: CA certificates installed by the CSMS, as PEM files on disk.

One store per operator (trust domain, docs/security.md): what one operator's CSMS installs is
listed to, and trusted for, that operator's endpoints only. Under ``<data_dir>/certs``::

    operators/<operator, %-escaped>/<CertificateType>/<sha256 of the DER>.pem
    operators/<operator, %-escaped>/stations/<endpoint id>/...   (security.keys)

``migrate_shared_store`` moves what a gateway before trust domains kept in ``certs/`` itself.

Certificates are identified the way the whitepaper (and OCSP, RFC 6960 CertID) does: hash of the
issuer's DER-encoded name, hash of the issuer's public key (the BIT STRING content of its
SubjectPublicKeyInfo), and the serial number in hex. We use SHA-256 throughout. For a root the
issuer is the certificate itself; for an installed intermediate the issuer is looked up among the
installed certificates, and when it is not there the certificate's own key stands in (documented
fallback: the CSMS can still address it, since we answer with the same hash in ids()).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

log = logging.getLogger("bess_gateway.security")

CENTRAL_SYSTEM_ROOT = "CentralSystemRootCertificate"  # 2.0.1 calls it CSMSRootCertificate
MANUFACTURER_ROOT = "ManufacturerRootCertificate"
# ISO 15118 roots (2.0.1): kept for an ISO 15118 stack to read (v201.iso15118), never used here.
V2G_ROOT = "V2GRootCertificate"
MO_ROOT = "MORootCertificate"
ROOT_TYPES: tuple[str, ...] = (CENTRAL_SYSTEM_ROOT, MANUFACTURER_ROOT, V2G_ROOT, MO_ROOT)
MAX_CERTIFICATES = 20  # CertificateStoreMaxLength: installed CA certificates, all types together

InstallStatus = Literal["Accepted", "Rejected", "Failed"]
DeleteStatus = Literal["Accepted", "Failed", "NotFound"]


class CertificateError(ValueError):
    """A PEM text that is not a usable certificate (the reason is in the message)."""


def parse_pem_chain(pem: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii", "strict"))
    except (ValueError, UnicodeEncodeError) as e:
        raise CertificateError(f"not a PEM certificate: {e}") from None
    if not certs:
        raise CertificateError("no certificate in the PEM text")
    return certs


def public_key_bits(key: Any) -> bytes:
    """The subjectPublicKey BIT STRING content, as OCSP's issuerKeyHash hashes it."""
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.public_bytes(serialization.Encoding.X962,
                                serialization.PublicFormat.UncompressedPoint)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise CertificateError(f"unsupported key type {type(key).__name__}")


def hash_data(cert: x509.Certificate, issuer: x509.Certificate | None = None) -> dict[str, str]:
    """certificateHashData (SHA-256) of ``cert``; ``issuer`` defaults to the certificate itself."""
    signer = issuer or cert
    return {
        "hashAlgorithm": "SHA256",
        "issuerNameHash": hashlib.sha256(cert.issuer.public_bytes()).hexdigest(),
        "issuerKeyHash": hashlib.sha256(public_key_bits(signer.public_key())).hexdigest(),
        "serialNumber": format(cert.serial_number, "x"),
    }


def same_hash(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Hash data equality as a CSMS means it: hex case and serial leading zeros do not matter."""
    try:
        return (a["hashAlgorithm"] == b["hashAlgorithm"]
                and a["issuerNameHash"].lower() == b["issuerNameHash"].lower()
                and a["issuerKeyHash"].lower() == b["issuerKeyHash"].lower()
                and int(a["serialNumber"], 16) == int(b["serialNumber"], 16))
    except (KeyError, ValueError, AttributeError):
        return False


def is_valid_now(cert: x509.Certificate, now: datetime | None = None) -> bool:
    t = now or datetime.now(UTC)
    return cert.not_valid_before_utc <= t <= cert.not_valid_after_utc


def is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


@dataclass(frozen=True, slots=True)
class Installed:
    certificate_type: str
    path: Path
    certificate: x509.Certificate


_generation = 0  # see generation()


def generation() -> int:
    """Bumped by every write and delete through the store (this module and security.keys): part
    of the version a cached TLS context is checked against (security.tls)."""
    return _generation


def _changed() -> None:
    # Called after the change, never before: a context built in between would otherwise carry
    # the new generation with the old files.
    global _generation
    _generation += 1


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file atomically (temp file + rename) so a crash never leaves half a PEM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _changed()


class CertificateStore:
    """CA certificates by type, stored as files under ``directory``."""

    def __init__(self, directory: Path, *, max_length: int = MAX_CERTIFICATES) -> None:
        self.directory = Path(directory)
        self.max_length = max_length

    def _all(self) -> list[Installed]:
        out: list[Installed] = []
        for certificate_type in ROOT_TYPES:
            folder = self.directory / certificate_type
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.pem")):
                try:
                    cert = x509.load_pem_x509_certificate(path.read_bytes())
                except (OSError, ValueError) as e:
                    log.error("certificate store: cannot read %s: %s", path, e)
                    continue
                out.append(Installed(certificate_type, path, cert))
        return out

    def installed(self, certificate_type: str) -> list[x509.Certificate]:
        """The certificates of one type (empty for an unknown type)."""
        return [i.certificate for i in self._all() if i.certificate_type == certificate_type]

    def pem(self, certificate_type: str) -> str:
        """All certificates of a type as one PEM text (for ``SSLContext.load_verify_locations``)."""
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode()
                       for c in self.installed(certificate_type))

    def install(self, certificate_type: str, pem: str) -> InstallStatus:
        """Install one CA certificate: Rejected when it is not one we may use, Failed on I/O."""
        if certificate_type not in ROOT_TYPES:
            return "Rejected"
        try:
            certs = parse_pem_chain(pem)
        except CertificateError as e:
            log.warning("InstallCertificate %s rejected: %s", certificate_type, e)
            return "Rejected"
        if len(certs) != 1:
            log.warning("InstallCertificate %s rejected: %d certificates, expected 1",
                        certificate_type, len(certs))
            return "Rejected"
        cert = certs[0]
        if not is_valid_now(cert) or not is_ca(cert):
            log.warning("InstallCertificate %s rejected: expired, not yet valid or not a CA "
                        "(%s)", certificate_type, cert.subject.rfc4514_string())
            return "Rejected"
        der = cert.public_bytes(serialization.Encoding.DER)
        path = self.directory / certificate_type / f"{hashlib.sha256(der).hexdigest()}.pem"
        existing = self._all()
        if path.exists():
            return "Accepted"  # installing the same certificate twice changes nothing
        if len(existing) >= self.max_length:
            log.warning("InstallCertificate %s rejected: store full (%d)", certificate_type,
                        self.max_length)
            return "Rejected"
        try:
            write_atomically(path, cert.public_bytes(serialization.Encoding.PEM))
        except OSError as e:
            log.error("InstallCertificate %s failed: %s", certificate_type, e)
            return "Failed"
        log.info("installed %s %s", certificate_type, cert.subject.rfc4514_string())
        return "Accepted"

    def _hash_of(self, item: Installed, everything: list[Installed]) -> dict[str, str]:
        cert = item.certificate
        issuer = None
        if cert.issuer != cert.subject:
            issuer = next((o.certificate for o in everything if o.certificate.subject
                           == cert.issuer), None)
        return hash_data(cert, issuer)

    def ids(self, certificate_type: str | None = None) -> list[dict[str, str]]:
        """certificateHashData of the installed certificates (of one type, or of all)."""
        everything = self._all()
        return [self._hash_of(i, everything) for i in everything
                if certificate_type is None or i.certificate_type == certificate_type]

    def delete(self, wanted: dict[str, Any]) -> DeleteStatus:
        """Delete the CA certificate with this certificateHashData."""
        everything = self._all()
        for item in everything:
            if same_hash(self._hash_of(item, everything), wanted):
                try:
                    item.path.unlink()
                except OSError as e:
                    log.error("DeleteCertificate %s failed: %s", item.path.name, e)
                    return "Failed"
                finally:
                    _changed()
                log.info("deleted %s %s", item.certificate_type,
                         item.certificate.subject.rfc4514_string())
                return "Accepted"
        return "NotFound"


def operator_directory(root: Path, operator: str) -> Path:
    """The store of one operator under ``root`` (``<data_dir>/certs``); the name is %-escaped
    (no "/" or "..": an operator name cannot reach outside its folder)."""
    name = quote(operator, safe="")
    if name in (".", ".."):  # quote leaves dots alone
        name = name.replace(".", "%2E")
    return Path(root) / "operators" / name


def migrate_shared_store(root: Path, operators: Mapping[str, str]) -> None:
    """Move the one shared store of a gateway before trust domains into per-operator stores.

    ``operators``: endpoint id -> operator. A station's key and certificate (``stations/<id>``)
    belong to that endpoint, so to its operator. The CA certificates (``<CertificateType>/``)
    were installed by some CSMS, and nothing says which: with one operator they are that
    operator's; with several they stay where they are, trusted by no operator (a warning says
    how to hand them to one), since trusting them for all is what trust domains prevent.
    """
    root = Path(root)
    stations = root / "stations"
    if stations.is_dir():
        for folder in sorted(stations.iterdir()):
            operator = operators.get(folder.name)
            if operator is None or not folder.is_dir():
                continue  # not a configured endpoint: nobody uses it
            target = operator_directory(root, operator) / "stations" / folder.name
            if target.exists():
                log.warning("certificate store: %s not moved: %s exists", folder, target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(folder, target)
            log.info("certificate store: station key and certificate of %s moved to %s",
                     folder.name, target)
    legacy = [p for t in ROOT_TYPES if (root / t).is_dir()
              for p in sorted((root / t).glob("*.pem"))]
    if not legacy:
        return
    names = sorted(set(operators.values()))
    if len(names) != 1:
        log.warning(
            "certificate store: %d CA certificate(s) under %s were installed before trust "
            "domains and are trusted by no operator, since %d operators are configured; move "
            "each into certs/operators/<operator>/<CertificateType>/ of the operator whose CSMS "
            "installed it, or let that CSMS install it again", len(legacy), root, len(names))
        return
    store = operator_directory(root, names[0])
    for path in legacy:
        target = store / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            path.unlink()
        else:
            shutil.move(path, target)
    log.info("certificate store: %d CA certificate(s) moved to the store of the only operator",
             len(legacy))

"""The certificate store, the station key/CSR and the profile rules, on real files and keys."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from bess_gateway.security import profiles
from bess_gateway.security.certificates import (
    CertificateStore,
    hash_data,
    migrate_shared_store,
    operator_directory,
)
from bess_gateway.security.keys import StationKeys

CSR_ROOT = "CentralSystemRootCertificate"
MFR_ROOT = "ManufacturerRootCertificate"


def ocsp_ids(cert: x509.Certificate, issuer: x509.Certificate) -> dict[str, str]:
    """The same identifiers computed by cryptography's OCSP code (RFC 6960 CertID)."""
    req = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
    return {"hashAlgorithm": "SHA256", "issuerNameHash": req.issuer_name_hash.hex(),
            "issuerKeyHash": req.issuer_key_hash.hex(), "serialNumber": format(req.serial_number,
                                                                               "x")}


def root(ca: trustme.CA) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes())


def sign(ca: trustme.CA, csr: x509.CertificateSigningRequest, *, days: int = 30,
         subject: x509.Name | None = None) -> str:
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = root(ca)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject or csr.subject)
            .issuer_name(ca_cert.subject).public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode() + ca.cert_pem.bytes().decode()


def test_install_ids_delete_with_whitepaper_hashes(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs")
    ca_a, ca_b = trustme.CA(), trustme.CA()
    assert store.installed(CSR_ROOT) == [] and store.ids(CSR_ROOT) == []
    assert store.install(CSR_ROOT, ca_a.cert_pem.bytes().decode()) == "Accepted"
    assert store.install(MFR_ROOT, ca_b.cert_pem.bytes().decode()) == "Accepted"
    # the same certificate again is not a second entry
    assert store.install(CSR_ROOT, ca_a.cert_pem.bytes().decode()) == "Accepted"
    assert [c.serial_number for c in store.installed(CSR_ROOT)] == [root(ca_a).serial_number]
    assert store.ids(CSR_ROOT) == [ocsp_ids(root(ca_a), root(ca_a))]
    assert store.ids(MFR_ROOT) == [ocsp_ids(root(ca_b), root(ca_b))]
    # a new store object on the same folder sees the same (files on disk)
    assert CertificateStore(tmp_path / "certs").ids(CSR_ROOT) == store.ids(CSR_ROOT)

    wanted = dict(store.ids(CSR_ROOT)[0])
    wanted["issuerKeyHash"] = wanted["issuerKeyHash"].upper()  # hex case does not matter
    assert store.delete(wanted) == "Accepted"
    assert store.ids(CSR_ROOT) == []
    assert store.delete(wanted) == "NotFound"
    assert store.ids(MFR_ROOT) != []


def test_install_rejects_what_is_not_a_usable_ca(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs", max_length=2)
    ca = trustme.CA()
    leaf = ca.issue_cert("csms.example").cert_chain_pems[0].bytes().decode()
    assert store.install(CSR_ROOT, "not a certificate") == "Rejected"
    assert store.install(CSR_ROOT, leaf) == "Rejected"  # not a CA
    assert store.install("NoSuchRootCertificate", ca.cert_pem.bytes().decode()) == "Rejected"
    assert store.install(CSR_ROOT, ca.cert_pem.bytes().decode()) == "Accepted"
    assert store.install(CSR_ROOT, trustme.CA().cert_pem.bytes().decode()) == "Accepted"
    # CertificateStoreMaxLength reached
    assert store.install(CSR_ROOT, trustme.CA().cert_pem.bytes().decode()) == "Rejected"
    assert len(store.installed(CSR_ROOT)) == 2


def test_intermediate_is_identified_by_its_installed_issuer(tmp_path: Path) -> None:
    store = CertificateStore(tmp_path / "certs")
    ca = trustme.CA()
    inter = ca.create_child_ca()
    inter_cert = root(inter)
    assert store.install(CSR_ROOT, ca.cert_pem.bytes().decode()) == "Accepted"
    assert store.install(CSR_ROOT, inter.cert_pem.bytes().decode()) == "Accepted"
    assert ocsp_ids(inter_cert, root(ca)) in store.ids(CSR_ROOT)
    assert hash_data(inter_cert, root(ca)) == ocsp_ids(inter_cert, root(ca))


def test_csr_carries_station_id_and_cpo_name_and_signed_chain_installs(tmp_path: Path) -> None:
    keys = StationKeys(tmp_path / "st", "BESS-01")
    assert keys.identity() is None
    csr = x509.load_pem_x509_csr(keys.csr("ACME CPO").encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "BESS-01"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "ACME CPO"
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)
    assert (keys.pending_path.stat().st_mode & 0o777) == 0o600

    ca = trustme.CA()
    # a certificate for another key (not our CSR's) is refused
    other = x509.load_pem_x509_csr(StationKeys(tmp_path / "other", "BESS-01").csr("").encode())
    status, reason = keys.accept_chain(sign(ca, other), 10000)
    assert status == "Rejected" and "key" in reason
    # the wrong CN is refused
    wrong_cn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "BESS-99")])
    assert keys.accept_chain(sign(ca, csr, subject=wrong_cn), 10000)[0] == "Rejected"
    # too long for CertificateSignedMaxChainSize
    chain = sign(ca, csr)
    assert keys.accept_chain(chain, len(chain) - 1)[0] == "Rejected"
    assert keys.identity() is None

    assert keys.accept_chain(chain, 10000) == ("Accepted", "")
    identity = keys.identity()
    assert identity is not None and (identity.stat().st_mode & 0o777) == 0o600
    installed = keys.chain()[0]
    assert len(keys.chain()) == 2 and installed.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    ) == csr.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    assert not keys.pending_path.exists()
    # the key and chain load as a TLS client identity
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_cert_chain(str(identity))
    # the same chain again (a CSMS retry) is still accepted: it certifies the current key
    assert keys.accept_chain(chain, 10000) == ("Accepted", "")


def test_profile_rules() -> None:
    full = profiles.Credentials(has_password=True, has_ca=True, has_client_cert=True)
    assert profiles.check_change(1, 2, full) is None
    assert profiles.check_change(2, 2, full) is None
    assert "raised" in (profiles.check_change(2, 1, full) or "")
    assert profiles.check_change(0, 4, full) is not None
    no_ca = profiles.Credentials(has_password=True, has_ca=False, has_client_cert=True)
    assert "CA" in (profiles.check_change(1, 2, no_ca) or "")
    assert profiles.check_change(1, 3, no_ca) is not None
    no_cert = profiles.Credentials(has_password=True, has_ca=True, has_client_cert=False)
    assert profiles.check_change(2, 3, no_cert) is not None


def test_a_csms_cannot_raise_a_station_with_a_colon_in_its_id_to_basic_auth() -> None:
    colon = profiles.Credentials(has_password=True, has_ca=True, has_client_cert=True,
                                 basic_auth_id=profiles.basic_auth_id_problem("HUB:01"))
    assert "RFC 7617" in (profiles.check_change(0, 1, colon) or "")
    assert "RFC 7617" in (profiles.check_change(0, 2, colon) or "")
    assert profiles.check_change(0, 3, colon) is None  # no Basic auth: the id is fine
    assert profiles.basic_auth_id_problem("HUB-01") is None


def test_basic_auth_password_is_the_key_bytes() -> None:
    key = "00ff" * 10
    assert profiles.basic_auth_password(key, "configured") == bytes.fromhex(key)
    assert profiles.basic_auth_password("", "configured") == b"configured"
    assert profiles.basic_auth_password("", None) is None
    assert profiles.valid_authorization_key("ab" * 20)
    assert profiles.valid_authorization_key("ab" * 16)
    assert not profiles.valid_authorization_key("ab" * 21)
    assert not profiles.valid_authorization_key("ab" * 15)
    assert not profiles.valid_authorization_key("zz" * 20)
    assert not profiles.valid_authorization_key("ab " * 20)


def legacy_store(root_dir: Path) -> tuple[x509.Certificate, Path]:
    """A store as a gateway before trust domains left it: one root, one station identity."""
    ca = trustme.CA()
    assert CertificateStore(root_dir).install(CSR_ROOT, ca.cert_pem.bytes().decode()) == \
        "Accepted"
    identity = root_dir / "stations" / "HUB-01" / "client.pem"
    identity.parent.mkdir(parents=True)
    identity.write_text("key and chain")
    return root(ca), identity


def test_a_shared_store_becomes_the_only_operators(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    cert, identity = legacy_store(certs)
    migrate_shared_store(certs, {"HUB-01": "acme", "HUB-02": "acme"})
    store = CertificateStore(operator_directory(certs, "acme"))
    assert store.ids(CSR_ROOT) == [hash_data(cert)]
    assert not list(certs.glob(f"{CSR_ROOT}/*.pem"))  # moved, not copied
    assert (store.directory / "stations" / "HUB-01" / "client.pem").read_text() == \
        "key and chain"
    assert not identity.exists()
    migrate_shared_store(certs, {"HUB-01": "acme"})  # a second start changes nothing
    assert store.ids(CSR_ROOT) == [hash_data(cert)]


def test_with_several_operators_shared_roots_are_nobodys_and_station_keys_their_own(
        tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    cert, identity = legacy_store(certs)
    migrate_shared_store(certs, {"HUB-01": "acme", "HUB-02": "beta"})
    for name in ("acme", "beta"):
        assert CertificateStore(operator_directory(certs, name)).ids() == []
    assert CertificateStore(certs).ids(CSR_ROOT) == [hash_data(cert)]  # left where it was
    # The station's own key and certificate are its endpoint's, so its operator's.
    moved = operator_directory(certs, "acme") / "stations" / "HUB-01" / "client.pem"
    assert moved.read_text() == "key and chain" and not identity.exists()


def test_an_operator_name_cannot_leave_its_folder(tmp_path: Path) -> None:
    for name in ("..", ".", "../x", "a/b", "wss://csms.example:443"):
        folder = operator_directory(tmp_path, name)
        assert folder.parent == tmp_path / "operators" and folder.name not in (".", "..")
        assert "/" not in folder.name

"""The certificate operations a CSMS orders, with the refusals both OCPP versions share.

1.6 (Security Whitepaper) and 2.0.1 (A02/A03, M03-M05) name the messages and certificate types
differently; what is decided is the same and lives here: which certificate may not be deleted,
how a signed chain is taken, how a CSR is made and sent. The version layers map names.

The security-profile rule, the same in both versions: on profiles 0 and 1 (no TLS: the CSMS is
not authenticated, so whoever sits on the link could speak for it) no trust anchor other than the
CSMS root is installed (a ManufacturerRootCertificate would let anyone sign firmware for us;
V2G/MO roots decide whom EVs trust), and no station certificate is requested or taken
(SignCertificate, CertificateSigned: a client certificate serves profile 3 only, whose raise needs
a TLS link). The CSMS root stays installable on profile 1: it is what a raise to profile 2 needs.
"""

from __future__ import annotations

import logging
from typing import Final

from bess_gateway.endpoint.connection_security import (
    effective_profile,
    security_event,
    station_keys,
)
from bess_gateway.endpoint.link import Context
from bess_gateway.ocpp.errors import CallErrorReceived, OcppError
from bess_gateway.security.certificates import CENTRAL_SYSTEM_ROOT, hash_data, same_hash
from bess_gateway.security.keys import StationKeys

log = logging.getLogger("bess_gateway.security")

# The schemas' maxLength of certificateChain (1.6 CertificateSignedMaxChainSize, 2.0.1
# SecurityCtrlr.MaxCertificateChainSize).
MAX_CHAIN_SIZE: Final = 10000
# What a refused chain raises, by version (the event was renamed in 2.0.1).
_INVALID_CHAIN_EVENT: Final = {"1.6": "InvalidChargePointCertificate",
                               "2.0.1": "InvalidChargingStationCertificate"}


def tls(ctx: Context) -> bool:
    """Whether the CSMS authenticated itself (profiles 2 and 3)."""
    return effective_profile(ctx) >= 2


def refused_without_tls(ctx: Context, what: str) -> bool:
    """True (and logged) when ``what`` needs a TLS link and the endpoint has none."""
    if tls(ctx):
        return False
    log.warning("%s: %s refused on security profile %d", ctx.endpoint_id, what,
                effective_profile(ctx))
    return True


def v2g_keys(ctx: Context) -> StationKeys:
    """The station's ISO 15118 (SECC) key and chain, apart from its CSMS client identity."""
    return StationKeys(ctx.certificates.directory / "stations" / ctx.endpoint_id / "v2g",
                       ctx.endpoint_id)


def delete_certificate(ctx: Context, wanted: dict[str, str]) -> str:
    """Delete an installed CA certificate: 'Accepted', 'NotFound' or 'Failed' (refused)."""
    chain = station_keys(ctx).chain()
    if chain and same_hash(hash_data(chain[0], chain[1] if len(chain) > 1 else None), wanted):
        return "Failed"  # both versions forbid deleting our own client certificate
    roots = ctx.certificates.ids(CENTRAL_SYSTEM_ROOT)
    if (effective_profile(ctx) >= 2 and ctx.cfg.ca_file is None and len(roots) == 1
            and same_hash(roots[0], wanted)):
        # Our decision: the last root we check the CSMS against would leave the next TLS
        # connection nothing to trust; the CSMS installs the new root first, then deletes.
        log.warning("%s: DeleteCertificate refused: last CSMS root certificate", ctx.endpoint_id)
        return "Failed"
    return ctx.certificates.delete(wanted)


def accept_signed_chain(ctx: Context, pem: str, keys: StationKeys | None = None) -> str:
    """CertificateSigned: install the chain for our last CSR; 'Accepted' or 'Rejected' (and a
    security event saying why)."""
    status, reason = (keys or station_keys(ctx)).accept_chain(pem, MAX_CHAIN_SIZE)
    if status != "Accepted":
        security_event(ctx, _INVALID_CHAIN_EVENT.get(ctx.version, "InvalidChargePointCertificate"),
                       reason)
    return status


def new_csr(ctx: Context, keys: StationKeys | None = None) -> str | None:
    """A new key pair (kept until CertificateSigned, keys.StationKeys) and its PEM CSR; None
    when the key cannot be stored."""
    try:
        return (keys or station_keys(ctx)).csr(ctx.station.settings.text("cpo_name"))
    except OSError as exc:
        log.error("%s: cannot store a new key for SignCertificate: %s", ctx.endpoint_id, exc)
        return None


async def send_csr(ctx: Context, extra: dict[str, str] | None = None,
                   keys: StationKeys | None = None, csr: str | None = None) -> str | None:
    """Send SignCertificate with ``csr`` (a new one when None); the CSMS's status, or None
    when it could not be made or sent."""
    csr = csr or new_csr(ctx, keys)
    if csr is None:
        return None
    try:
        resp = await ctx.call("SignCertificate", {"csr": csr, **(extra or {})})
    except (CallErrorReceived, OcppError, TimeoutError, ConnectionError) as exc:
        log.warning("%s: SignCertificate failed: %s", ctx.endpoint_id, exc)
        return None
    log.info("%s: SignCertificate %s", ctx.endpoint_id, resp.get("status"))
    return str(resp.get("status"))

"""2.0.1 M ISO 15118 certificates: the hook an ISO 15118 stack plugs into.

The gateway has no ISO 15118 stack of its own (its EVSEs are virtual). A stack that runs beside
it (an SECC talking to EVs over PLC) needs the CSMS for two things, and this module forwards them
over the endpoint's OCPP link unchanged:

- ``get_ev_certificate``: Get15118EVCertificate (M01 install / M02 update of an EV's contract
  certificate): the EV's EXI CertificateInstallationReq/CertificateUpdateReq goes to the CSMS,
  whose EXI answer comes back for the stack to hand to the EV.
- ``get_certificate_status``: GetCertificateStatus (M06): an OCSP request for a certificate the
  stack checks (its SECC chain, a contract certificate); the answer carries the OCSP response.

Both return the CSMS's answer payload (camelCase, as the schema has it) and raise
``ConnectionError`` when the endpoint is offline, ``TimeoutError`` when the CSMS does not answer,
and ``bess_gateway.ocpp.errors.CallErrorReceived`` when it answers with a CALLERROR. The trust
anchors the stack needs (V2GRootCertificate, MORootCertificate) are the ones the CSMS installs
through InstallCertificate, in its operator's certificate store (``ctx.certificates``); the
station's own SECC certificate is requested with TriggerMessage(SignV2GCertificate) and kept by
``endpoint.certificate_operations.v2g_keys``.
"""

from __future__ import annotations

from typing import Any, Literal

from bess_gateway.endpoint.link import Context

CertificateAction = Literal["Install", "Update"]


async def get_ev_certificate(ctx: Context, iso15118_schema_version: str,
                             action: CertificateAction, exi_request: str) -> dict[str, Any]:
    """Forward an EV's certificate request (Base64 EXI) to the CSMS; its answer: ``status``
    (Accepted/Failed), ``exiResponse`` (Base64 EXI for the EV), maybe ``statusInfo``."""
    return await ctx.call("Get15118EVCertificate", {
        "iso15118SchemaVersion": iso15118_schema_version, "action": action,
        "exiRequest": exi_request})


async def get_certificate_status(ctx: Context, ocsp_request_data: dict[str, str]
                                 ) -> dict[str, Any]:
    """Ask the CSMS for a certificate's OCSP status. ``ocsp_request_data``: hashAlgorithm,
    issuerNameHash, issuerKeyHash, serialNumber, responderURL. The answer: ``status``
    (Accepted/Failed), ``ocspResult`` (Base64 DER OCSPResponse) when Accepted."""
    return await ctx.call("GetCertificateStatus", {"ocspRequestData": ocsp_request_data})

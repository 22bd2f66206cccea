"""2.0.1 M ISO 15118 hook end to end: what an ISO 15118 stack would call is forwarded to the demo
CSMS (ocpp.v201, which validates what it receives; what we send is schema-checked too) and its
answer comes back unchanged."""

from __future__ import annotations

import base64
import secrets

import pytest
from waiting import until

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.ocpp.errors import CallErrorReceived
from bess_gateway.ocpp.v201 import iso15118
from tests.conftest import GatewayFactory

SID = "DEMO-01"


async def test_ev_certificate_and_certificate_status_pass_through(
        gateway_factory: GatewayFactory, csms: CsmsServer) -> None:
    gw = await gateway_factory(1, ocpp="2.0.1")
    await csms.wait_for(SID, "BootNotification", timeout=20)
    await until(lambda: gw.endpoints[SID].booted.is_set(), 20)
    ctx = gw.endpoints[SID].ctx

    exi_request = base64.b64encode(secrets.token_bytes(300)).decode()
    # A CSMS without a contract-certificate backend: Failed comes back as the stack's answer.
    r = await iso15118.get_ev_certificate(ctx, "urn:iso:15118:2:2013:MsgDef", "Install",
                                          exi_request)
    assert r == {"status": "Failed", "exiResponse": ""}
    got = await csms.wait_for(SID, "Get15118EVCertificate")
    assert got.payload == {"iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
                           "action": "Install", "exiRequest": exi_request}

    exi_response = base64.b64encode(secrets.token_bytes(500)).decode()
    csms.policy.ev_certificate_exi = exi_response
    r = await iso15118.get_ev_certificate(ctx, "urn:iso:15118:2:2013:MsgDef", "Update",
                                          exi_request)
    assert r == {"status": "Accepted", "exiResponse": exi_response}

    ocsp = {"hashAlgorithm": "SHA256", "issuerNameHash": "ab" * 32,
            "issuerKeyHash": "cd" * 32, "serialNumber": "1f2e",
            "responderURL": "http://ocsp.example/"}
    with pytest.raises(CallErrorReceived):  # no OCSP responder: the CALLERROR reaches the stack
        await iso15118.get_certificate_status(ctx, ocsp)
    csms.policy.ocsp_result = base64.b64encode(b"\x30\x03\x0a\x01\x00").decode()
    r = await iso15118.get_certificate_status(ctx, ocsp)
    assert r == {"status": "Accepted", "ocspResult": csms.policy.ocsp_result}
    sent = [m.payload for m in csms.of(SID, "GetCertificateStatus")]
    assert sent == [{"ocspRequestData": ocsp}] * 2

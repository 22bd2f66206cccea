"""Issue 13 item 12: SIGTERM stops the gateway with a WebSocket close every CSMS takes as a
normal departure, 1001 Going Away, not 1011 Internal Error. The real `bess-gateway run` process
(SIGTERM as systemd sends it) with a 1.6 and a 2.0.1 endpoint, the demo CSMS (the `ocpp`
library on a websockets server) reading the close code each connection ended with."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from gateway_process import endpoints_config, killed_at_exit
from websockets.frames import CloseCode

from bess_gateway.demo.csms import CsmsServer
from bess_gateway.sim.server import SimulatorThread

VERSIONS = {"STOP-16": "1.6", "STOP-201": "2.0.1"}


async def test_sigterm_closes_every_csms_connection_going_away(
        tmp_path: Path, sim: SimulatorThread, csms: CsmsServer) -> None:
    cfg_path = endpoints_config(tmp_path, sim.port, csms.url, VERSIONS)
    async with killed_at_exit(cfg_path) as proc:
        # A status is sent once the boot was accepted: both endpoints run, registered.
        for sid in VERSIONS:
            await csms.wait_for(sid, "StatusNotification", timeout=60)
        assert csms.close_codes == {}
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    await csms.wait_until(lambda: set(csms.close_codes) == set(VERSIONS))
    assert csms.close_codes == {sid: [CloseCode.GOING_AWAY] for sid in VERSIONS}

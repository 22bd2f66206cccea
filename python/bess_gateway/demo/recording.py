"""What the demo CSMS's station classes (1.6 and 2.0.1, on the `ocpp` library's ChargePoint)
share: every frame is recorded before the library routes it, CALLs for the CSMS's log and
answers by unique id for `CsmsServer.call_raw`; CALLs of an action in `Policy.call_errors` get
their CALLERROR here, those in `Policy.answers` their scripted CALLRESULT: the library never sees
them. A CALL is marked done once its handler (or that answer) has run (`CsmsServer.wait_for`
returns only those)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson


class RecordsFrames:
    """Mixin, first among the bases: `class Station(RecordsFrames, ChargePoint)`."""

    id: str
    server: Any  # the CsmsServer (bess_gateway.demo.csms imports this module)
    _connection: Any  # the ChargePoint's ServerConnection

    def _start_recording(self, server: Any) -> None:
        self.server = server
        self.raw_replies: dict[str, Any] = {}
        self.reply_event = asyncio.Event()

    def _on_call(self, action: str, payload: dict[str, Any]) -> None:
        """A CALL from the station, just recorded: what a version tracks besides."""

    async def route_message(self, raw_msg: str | bytes) -> None:
        try:
            msg = orjson.loads(raw_msg)
        except orjson.JSONDecodeError:
            msg = None
        received = None
        if isinstance(msg, list) and len(msg) >= 3:
            if msg[0] == 2 and len(msg) == 4 and isinstance(msg[3], dict):
                received = self.server.record_call(self.id, str(msg[2]), msg[3], str(msg[1]))
                code = self.server.policy.call_errors.get(str(msg[2]))
                if code is not None:
                    await self._connection.send(orjson.dumps(
                        [4, msg[1], code, "refused by the CSMS's policy", {}]).decode())
                    self.server.mark_done(received)
                    return
                answer = self.server.policy.answers.get(str(msg[2]))
                if answer is not None:
                    await self._connection.send(orjson.dumps([3, msg[1], answer]).decode())
                    self.server.mark_done(received)
                    return
                self._on_call(str(msg[2]), msg[3])
            elif msg[0] in (3, 4):
                self.raw_replies[str(msg[1])] = msg
                self.reply_event.set()
        try:
            await super().route_message(raw_msg)  # type: ignore[misc]
        finally:
            if received is not None:
                self.server.mark_done(received)

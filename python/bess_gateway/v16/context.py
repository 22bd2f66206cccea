"""What the 1.6 feature blocks share: the station, the journal and the current CSMS link.

Blocks get this passed in (libocpp's functional blocks) rather than living in one big class.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bess_gateway.config import EndpointConfig
from bess_gateway.domain.station import Station
from bess_gateway.journal import Journal
from bess_gateway.maintenance.service import Maintenance
from bess_gateway.ocppj.rpc import RpcConnection
from bess_gateway.security.certificates import CertificateStore

log = logging.getLogger("bess_gateway.v16")

VERSION = "1.6"


@dataclass
class Context:
    cfg: EndpointConfig
    station: Station
    journal: Journal
    certificates: CertificateStore  # the gateway's CA store, shared by its endpoints
    rpc: RpcConnection | None = None
    accepted: bool = False  # BootNotification accepted on the current connection
    outbox_wake: asyncio.Event = field(default_factory=asyncio.Event)
    tx_wake: asyncio.Event = field(default_factory=asyncio.Event)
    status_wake: asyncio.Event = field(default_factory=asyncio.Event)
    heartbeat_wake: asyncio.Event = field(default_factory=asyncio.Event)
    restart: Callable[[str], Awaitable[None]] | None = None  # set by the endpoint: reset hook
    # The gateway's firmware/diagnostics service, shared by all endpoints (set by the gateway).
    maintenance: Maintenance | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # ExtendedTriggerMessage senders by requestedMessage, for messages a block owns (e.g.
    # "LogStatusNotification"); a block registers its sender here when building its handlers.
    triggers: dict[str, Callable[[int | None], Awaitable[None]]] = field(default_factory=dict)

    @property
    def online(self) -> bool:
        return self.rpc is not None and self.accepted

    @property
    def endpoint_id(self) -> str:
        return self.cfg.id

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.rpc is None:
            raise ConnectionError(f"{self.cfg.id}: not connected")
        return await self.rpc.call(action, payload)

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        """Run a background job that outlives a handler; failures are logged, never lost."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: %s failed", self.cfg.id, name)

        task = asyncio.get_running_loop().create_task(guarded(), name=f"{self.cfg.id}:{name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

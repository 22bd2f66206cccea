"""2.0.1 E/F/J: TransactionEvent, remote start/stop, meter values (skeleton; being written)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bess_gateway import outbox
from bess_gateway.domain.station import StopReason, Transaction
from bess_gateway.journal import OutboxItem, TxRecord
from bess_gateway.link import Context

log = logging.getLogger("bess_gateway.v201")

TX_ACTIONS = frozenset({"TransactionEvent"})


def _prepare(ctx: Context, item: OutboxItem) -> dict[str, Any] | None:
    return dict(item.payload)


def _answered(ctx: Context, item: OutboxItem, payload: dict[str, Any],
              resp: dict[str, Any]) -> None:
    return None


POLICY = outbox.Policy(tx_actions=TX_ACTIONS, prepare=_prepare, answered=_answered,
                       attempts_setting="transaction_message_attempts",
                       interval_setting="transaction_message_retry_interval_s")


async def deliver_outbox(ctx: Context) -> None:
    await outbox.deliver(ctx, POLICY)


async def sampler(ctx: Context) -> None:
    await asyncio.Event().wait()


def handlers(ctx: Context) -> dict[str, Any]:
    return {}


def stop_session(ctx: Context, connector: int, reason: StopReason) -> Transaction | None:
    return ctx.station.end(connector, reason)


def recover(ctx: Context, records: list[TxRecord]) -> None:
    for rec in records:
        ctx.journal.finish_transaction(ctx.endpoint_id, rec.local_id)

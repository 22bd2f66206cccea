"""Delivery of the journal's outbox: queued messages leave in order, one at a time.

Both OCPP versions queue here (1.6 StartTransaction/StopTransaction/MeterValues, 2.0.1
TransactionEvent, security events of either); a version layer only says which actions are
transaction messages, what an item needs just before it is sent, and what an answer teaches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bess_gateway.journal import OutboxItem
from bess_gateway.link import Context
from bess_gateway.ocppj.errors import CallErrorReceived, OcppError

log = logging.getLogger("bess_gateway.outbox")


@dataclass(frozen=True, slots=True)
class Policy:
    """What a version layer tells the delivery loop."""

    tx_actions: frozenset[str]
    # The payload to send, or None when the item can never be sent (it is then dropped, logged).
    prepare: Callable[[Context, OutboxItem], dict[str, Any] | None]
    # Runs inside the ack's journal transaction: what the CSMS's answer teaches.
    answered: Callable[[Context, OutboxItem, dict[str, Any], dict[str, Any]], None]
    attempts_setting: str = "transaction_message_attempts"
    interval_setting: str = "transaction_message_retry_interval_s"


async def deliver(ctx: Context, policy: Policy) -> None:
    """Send journaled messages in order, one at a time, until the link drops."""
    settings = ctx.station.settings
    while True:
        items = ctx.journal.pending(ctx.endpoint_id, limit=1)
        if not items:
            ctx.outbox_wake.clear()
            await ctx.outbox_wake.wait()
            continue
        item = items[0]
        payload = policy.prepare(ctx, item)
        if payload is None:
            ctx.journal.ack(item.seq)
            continue
        try:
            resp = await ctx.rpc.call(item.action, payload, unique_id=item.unique_id)  # type: ignore[union-attr]
        except (OcppError, TimeoutError) as exc:
            if item.action not in policy.tx_actions and isinstance(exc, CallErrorReceived):
                # A non-transaction message the CSMS refuses (a CSMS without the Security
                # extension answers SecurityEventNotification with NotImplemented): retrying
                # would only hold the transaction messages queued behind it.
                log.warning("%s: %s refused by the CSMS (%s); dropped", ctx.endpoint_id,
                            item.action, exc)
                ctx.journal.ack(item.seq)
                continue
            # A CALLERROR, no answer, or an answer that breaks the schema: all count as attempts.
            ctx.journal.bump_attempts(item.seq)
            attempts = item.attempts + 1
            if attempts >= settings.int(policy.attempts_setting):
                log.error("%s: %s given up after %d attempts: %s", ctx.endpoint_id,
                          item.action, attempts, exc)
                ctx.journal.ack(item.seq)
            else:
                await asyncio.sleep(settings.int(policy.interval_setting) * attempts)
            continue
        # The ack and what the answer teaches (the CSMS's transaction id, the idTag's status)
        # in one commit: a crash between them could leave a queued stop without its id; and one
        # fsync instead of several.
        with ctx.journal.atomic():
            ctx.journal.ack(item.seq)
            policy.answered(ctx, item, payload, resp)

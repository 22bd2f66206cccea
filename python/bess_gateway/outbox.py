"""Delivery of the journal's outbox: queued messages leave in order, one at a time.

Both OCPP versions queue here (1.6 StartTransaction/StopTransaction/MeterValues, 2.0.1
TransactionEvent, security events of either); a version layer only says which actions are
transaction messages, what an item needs just before it is sent, and what an answer teaches.

Queued messages take a token of the gateway's pacer before they leave (bess_gateway.pacing), so
hundreds of endpoints reconnecting with a backlog reach their CSMS at a bounded rate.
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

HOLD_POLL_S = 0.05  # about one control period: how often a held item is looked at again


@dataclass(frozen=True, slots=True)
class Policy:
    """What a version layer tells the delivery loop."""

    tx_actions: frozenset[str]
    # The payload to send, or None when the item can never be sent (it is then dropped, logged).
    prepare: Callable[[Context, OutboxItem], dict[str, Any] | None]
    # Runs inside the ack's journal transaction: what the CSMS's answer teaches.
    answered: Callable[[Context, OutboxItem, dict[str, Any], dict[str, Any]], None]
    # True while an item must wait (a StopTransaction until its meter has settled); it is read
    # again after the wait. A hold that rewrites the item does so in the journal and in `item`.
    hold: Callable[[Context, OutboxItem], bool] | None = None
    # A non-transaction message refused with a CALLERROR (it is dropped either way): True when
    # the version layer has said what it means (logged once), so the loop does not log it too.
    refused: Callable[[Context, OutboxItem, CallErrorReceived], bool] | None = None
    # 1.6 TransactionMessageAttempts / TransactionMessageRetryInterval and 2.0.1
    # OCPPCommCtrlr.MessageAttempts(TransactionEvent) / MessageAttemptInterval(TransactionEvent)
    # are both these domain settings.
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
        if policy.hold is not None and policy.hold(ctx, item):
            await asyncio.sleep(HOLD_POLL_S)  # bounded by the hold itself (a few s at most)
            continue
        if ctx.pacer is not None:
            # Gateway-wide pacing (bess_gateway.pacing): a backlog after an outage leaves at a
            # bounded rate; a lone live message finds a token waiting.
            await ctx.pacer.take()
            # Read it again: meanwhile its transaction id may have been written in, or the
            # budget may have thinned it away (then the new head goes through the checks).
            items = ctx.journal.pending(ctx.endpoint_id, limit=1)
            if not items or items[0].seq != item.seq:
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
                if policy.refused is None or not policy.refused(ctx, item, exc):
                    log.warning("%s: %s refused by the CSMS (%s); dropped", ctx.endpoint_id,
                                item.action, exc)
                ctx.journal.ack(item.seq)
                continue
            # A CALLERROR, no answer, or an answer that breaks the schema: the CSMS failed to
            # process it, an attempt (a lost link is none: the message waits for the next one).
            # 1.6 4.10 / 2.0.1 E13: after the n-th failure wait interval x n, then resend; after
            # `attempts` failures discard it and go on with the next message.
            ctx.journal.bump_attempts(item.seq)
            attempts = item.attempts + 1
            if attempts >= settings.int(policy.attempts_setting):
                log.error("%s: %s %s discarded after %d failed attempts (last: %s); "
                          "going on with the next queued message", ctx.endpoint_id,
                          item.action, item.unique_id, attempts, exc)
                ctx.journal.ack(item.seq)
            else:
                delay = settings.int(policy.interval_setting) * attempts
                log.warning("%s: %s %s failed (attempt %d: %s); resent in %d s", ctx.endpoint_id,
                            item.action, item.unique_id, attempts, exc, delay)
                await asyncio.sleep(delay)
            continue
        # The ack and what the answer teaches (the CSMS's transaction id, the idTag's status)
        # in one commit: a crash between them could leave a queued stop without its id; and one
        # fsync instead of several.
        with ctx.journal.atomic():
            ctx.journal.ack(item.seq)
            policy.answered(ctx, item, payload, resp)

"""Delivery of the journal's outbox: queued messages leave in order, one at a time.

Both OCPP versions queue here (1.6 StartTransaction/StopTransaction/MeterValues, 2.0.1
TransactionEvent, security events of either); a version layer only says which actions are
transaction messages, what an item needs just before it is sent, and what an answer teaches.
Queued messages take a token of the gateway's pacer before they leave
(bess_gateway.endpoint.pacing), so
hundreds of endpoints reconnecting with a backlog reach their CSMS at a bounded rate.

The rules below are what docs/ocpp-support.md shows as "Timeouts and retries" (docs_gen).

Transaction-related messages (1.6 section 3.7: StartTransaction, StopTransaction, the MeterValues
of a transaction; 2.0.1 TransactionEvent) are journaled and sent strictly in order, one at a time;
a new one waits behind those queued (1.6 3.7, 2.0.1 E11/E12). Each keeps its message id: a resend
carries the id it first went out with (2.0.1 part 4 section 4.1.4 allows it), so a CSMS can tell a
resend from a new message.

- **What counts as a failed attempt.** 1.6 section 3.7.1 lets a charge point skip a
  transaction-related message "if and only if the Central System repeatedly reports a failure to
  process the message", and OCPP-J (1.6 and 2.0.1 part 4, section 4.2.3 CALLERROR) says that a
  server reports it with a CALLERROR. So an attempt is: a CALLERROR; a reply that is no OCPP-J
  frame; or an answer that breaks the schema and lacks what the message needs back (a 1.6
  StartTransaction.conf without a usable transactionId). Any other off-schema answer counts as
  delivered (the CSMS got the message; the answer is logged and counted as
  `outcome="invalid"`).
- **A timeout is not an attempt.** A message with no answer within MessageTimeout
  (`message_timeout_s`, 1.6 vendor key MessageTimeout, 2.0.1 OCPPCommCtrlr.MessageTimeout) stays at
  the head of the queue and is sent again for as long as it takes (1.6 4.8 and 4.10: a CSMS that
  fails to answer "will only cause the Charge Point to try the same message again"). The wait
  before the n-th resend in a row is TransactionMessageRetryInterval x n, n capped at
  TransactionMessageAttempts (default 60 s, 120 s, 180 s, 180 s, ...): a stalled CSMS gets the
  message at a bounded pace and never loses it. A lost connection is no attempt either: the
  message waits for the next connection, where the count of timeouts starts afresh.
- **Retries after a failed attempt** (1.6 3.7.1; 2.0.1 E13, E13.FR.02-04): after the n-th failure
  the message is sent again after TransactionMessageRetryInterval x n; after
  TransactionMessageAttempts failures it is given up (an ERROR log line names it) and the queue
  goes on. 2.0.1 OCPPCommCtrlr.MessageAttempts / MessageAttemptInterval (instance
  TransactionEvent) are the same two settings (`transaction_message_attempts`,
  `transaction_message_retry_interval_s`).
- **A start given up abandons its transaction.** When the given-up message is a transaction's
  start (1.6 StartTransaction, 2.0.1 TransactionEvent Started), the CSMS has no transaction to
  refer the rest to. In one journal commit the start leaves the queue, the transaction is marked
  abandoned and, if its session still runs, the session ends here (power off, reason Other). Its
  other queued messages (MeterValues, StopTransaction; Updated, Ended) are then dropped as they
  come up, never sent: the CSMS would refuse a 1.6 transactionId it never issued, and a 2.0.1
  Updated or Ended would open a transaction that has no Started. The energy of the session (the
  settled register its stop carries, minus its start register) is counted per endpoint and
  connector as unattributed: metrics `bess_transactions_abandoned_total{endpoint}` and
  `bess_energy_unattributed_wh_total{endpoint,connector}`, /status `abandoned_transactions` and
  `unattributed_energy_wh`, kept in the journal across restarts, and ERROR log lines. Delivered
  by the battery, never billed to an idTag: an operator settles it by hand.
- **Another transaction message given up** (a StopTransaction, MeterValues or TransactionEvent
  Updated/Ended refused as many times) is logged at ERROR and dropped, as 1.6 3.7.1 allows (for
  a stop, the CSMS keeps that transaction open). Every message given up is counted:
  `bess_transaction_messages_given_up_total{endpoint,action}`, /status `messages_given_up`.
- **Non-transaction messages in the queue** (security events): a CALLERROR drops one at once (a
  CSMS without the Security extension answers NotImplemented; retrying would only hold the
  transaction messages behind it); a timeout is retried as above.
- **Messages that do not queue.** StatusNotification: a CALLERROR is the CSMS's final answer
  (logged once per error code; the next change is sent, this one is not repeated); an off-schema
  answer counts as received; a timeout or a lost link sends it again (1 s later, or on the next
  connection). Heartbeat: a failure is logged and the next one follows at the interval.
  Authorize: no answer (timeout, CALLERROR, lost link) means the offline rules decide
  (LocalAuthorizeOffline, AllowOfflineTxForUnknownId). Sampled MeterValues sent directly (link up,
  queue empty) that get no answer or a CALLERROR are queued under their message id.
- **A remote start that never begins.** A connector a RemoteStartTransaction /
  RequestStartTransaction took is Preparing until its session begins. If the start fails first
  (refused, the Accepted answer could not be sent, the link lost during Authorize, the journal
  failing) the connector is Available again at once; if nothing happens, after ConnectionTimeOut
  (1.6; 2.0.1 TxCtrlr.EVConnectionTimeOut, `connection_timeout_s`), and a start authorized later
  than that does not begin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bess_gateway.domain.settings import Settings
from bess_gateway.endpoint import sessions
from bess_gateway.endpoint.link import Context
from bess_gateway.journal import OutboxItem
from bess_gateway.ocpp.errors import CallErrorReceived, InvalidAnswer, OcppError

log = logging.getLogger("bess_gateway.endpoint.outbox")

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
    # Whether an item is the start message of its transaction (1.6 StartTransaction, 2.0.1
    # TransactionEvent Started): giving one up abandons the transaction (sessions.abandon).
    is_start: Callable[[OutboxItem], bool] = lambda _item: False
    # A start message's connector and the register it carries (1.6 meterStart, 2.0.1 its
    # Transaction.Begin energy register); None for what it does not carry.
    started: Callable[[OutboxItem], tuple[int | None, int | None]] = lambda _item: (None, None)
    # Ends a connector's session locally (power off, its stop message queued as usual).
    stop: Callable[[Context, int], object] | None = None
    # An answer that breaks the schema is still an answer: the response to go on with
    # (`answered` gets it), or None when the message cannot count as delivered (an answer
    # without what the message needs back: then it is a failed attempt, like a CALLERROR).
    salvage: Callable[[OutboxItem, Any], dict[str, Any] | None] = lambda _item, _payload: {}
    # A non-transaction message refused with a CALLERROR (it is dropped either way): True when
    # the version layer has said what it means (logged once), so the loop does not log it too.
    refused: Callable[[Context, OutboxItem, CallErrorReceived], bool] | None = None
    # 1.6 TransactionMessageAttempts / TransactionMessageRetryInterval and 2.0.1
    # OCPPCommCtrlr.MessageAttempts(TransactionEvent) / MessageAttemptInterval(TransactionEvent)
    # are both these domain settings.
    attempts_setting: str = "transaction_message_attempts"
    interval_setting: str = "transaction_message_retry_interval_s"


def timeout_delay(settings: Settings, policy: Policy, timeouts: int) -> int:
    """The wait before resending a message after its `timeouts`-th unanswered send in a row.

    The attempts rule's schedule (interval x n), grown no further than its last step (interval x
    attempts): a stalled CSMS gets the message again at a bounded pace, and never loses it.
    """
    interval = settings.int(policy.interval_setting)
    return interval * max(1, min(timeouts, settings.int(policy.attempts_setting)))


class Outbox:
    """One endpoint's delivery, with the policy its version chose at construction."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def deliver(self, ctx: Context) -> None:
        """The connection-long delivery job (`deliver` with this endpoint's policy)."""
        await deliver(ctx, self.policy)


async def deliver(ctx: Context, policy: Policy) -> None:
    """Send journaled messages in order, one at a time, until the link drops.

    What counts as a failed attempt (1.6 3.7.1 / 2.0.1 E13: the CSMS reports a "failure to
    process the message", which OCPP-J says it does with a CALLERROR): a CALLERROR, a reply that
    is no OCPP-J frame, or an off-schema answer the message cannot do without (`salvage`). A
    timeout is none: the CSMS has not said anything, so the message stays at the head of the
    queue and is sent again (same message id) after a back-off (`timeout_delay`), for as long
    as it takes; a lost link is none either (the message waits for the next connection).
    """
    settings = ctx.station.settings
    timeouts = 0  # unanswered sends in a row of the message at the head (this link)
    head: int | None = None
    while True:
        items = ctx.journal.outbox.pending(ctx.endpoint_id, limit=1)
        if not items:
            ctx.outbox_wake.clear()
            await ctx.outbox_wake.wait()
            continue
        item = items[0]
        if policy.hold is not None and policy.hold(ctx, item):
            await asyncio.sleep(HOLD_POLL_S)  # bounded by the hold itself (a few s at most)
            continue
        if ctx.pacer is not None:
            # Gateway-wide pacing (bess_gateway.endpoint.pacing): a backlog after an outage leaves
            # at a
            # bounded rate; a lone live message finds a token waiting.
            await ctx.pacer.take()
            # Read it again: meanwhile its transaction id may have been written in, or the
            # budget may have thinned it away (then the new head goes through the checks).
            items = ctx.journal.outbox.pending(ctx.endpoint_id, limit=1)
            if not items or items[0].seq != item.seq:
                continue
            item = items[0]
        if item.seq != head:
            head, timeouts = item.seq, 0
        if sessions.drop_if_abandoned(ctx, item):
            continue
        payload = policy.prepare(ctx, item)
        if payload is None:
            ctx.journal.outbox.ack(item.seq)
            continue
        try:
            resp = await ctx.rpc.call(item.action, payload, unique_id=item.unique_id)  # type: ignore[union-attr]
        except TimeoutError:
            timeouts += 1
            delay = timeout_delay(settings, policy, timeouts)
            log.warning("%s: %s %s unanswered (%d in a row); not a failed attempt: sent again "
                        "in %d s", ctx.endpoint_id, item.action, item.unique_id, timeouts, delay)
            await asyncio.sleep(delay)
            continue
        except InvalidAnswer as exc:
            salvaged = policy.salvage(item, exc.payload)
            if salvaged is None:
                await _failed(ctx, policy, item, exc)
                continue
            # Counted and logged by the RPC layer; the CSMS got the message.
            resp = salvaged
        except OcppError as exc:
            if item.action not in policy.tx_actions and isinstance(exc, CallErrorReceived):
                # A non-transaction message the CSMS refuses (a CSMS without the Security
                # extension answers SecurityEventNotification with NotImplemented): retrying
                # would only hold the transaction messages queued behind it.
                if policy.refused is None or not policy.refused(ctx, item, exc):
                    log.warning("%s: %s refused by the CSMS (%s); dropped", ctx.endpoint_id,
                                item.action, exc)
                ctx.journal.outbox.ack(item.seq)
                continue
            await _failed(ctx, policy, item, exc)
            continue
        # The ack and what the answer teaches (the CSMS's transaction id, the idTag's status)
        # in one commit: a crash between them could leave a queued stop without its id; and one
        # fsync instead of several.
        with ctx.journal.atomic():
            ctx.journal.outbox.ack(item.seq)
            policy.answered(ctx, item, payload, resp)


async def _failed(ctx: Context, policy: Policy, item: OutboxItem, exc: Exception) -> None:
    """The CSMS failed to process `item`: an attempt. 1.6 3.7.1 / 2.0.1 E13: after the n-th
    failure wait interval x n, then resend; after `attempts` failures give the message up and
    go on with the next one. A start message given up abandons its transaction."""
    settings = ctx.station.settings
    ctx.journal.outbox.bump_attempts(item.seq)
    attempts = item.attempts + 1
    if attempts < settings.int(policy.attempts_setting):
        delay = settings.int(policy.interval_setting) * attempts
        log.warning("%s: %s %s failed (attempt %d: %s); resent in %d s", ctx.endpoint_id,
                    item.action, item.unique_id, attempts, exc, delay)
        await asyncio.sleep(delay)
        return
    log.error("%s: %s %s discarded after %d failed attempts (last: %s); going on with the "
              "next queued message", ctx.endpoint_id, item.action, item.unique_id, attempts, exc)
    with ctx.journal.atomic():
        ctx.journal.abandoned.count_given_up(ctx.endpoint_id, item.action)
        if policy.is_start(item):
            sessions.abandon(ctx, item, *policy.started(item), policy.stop)
        else:
            ctx.journal.outbox.ack(item.seq)
            # A stop given up ends its Finishing all the same.
            ctx.services.settling.delivered(item)

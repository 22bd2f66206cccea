"""What the version layers remember about one transaction, typed: `Transaction.facts`.

It is journaled with the transaction (`TxRecord.data`, JSON) so a transaction cut by a crash is
ended with what it had reached (its next seqNo, the values kept for its stop message). The JSON
keys are the ones the untyped dict used before (issue 12), so journals written by older
gateways load unchanged. A key this gateway does not know (written by a newer one) is kept and
written back, so reading a journal never loses data.

A fact never recorded is left out of the JSON, as it always was: a field is None (or its
default) exactly when its key was absent, and `to_dict(from_dict(d)) == d` for every dict an
older gateway wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KEPT = "tx_ended"  # the key of the kept meter values
# The kinds of kept samples, by the reading context they were taken in (also their keys).
BEGIN, PERIODIC, CLOCK = "Transaction.Begin", "Sample.Periodic", "Sample.Clock"
SERIES = (PERIODIC, CLOCK)


def _rest(d: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in known}


@dataclass(slots=True)
class KeptSeries:
    """Intermediate samples of one kind, thinned evenly (domain.metering.keep)."""

    n: int = 0  # samples offered so far
    stride: int = 1  # every `stride`-th offered sample is kept
    rows: list[list[Any]] = field(default_factory=list)  # packed samples (metering._pack)
    other: dict[str, Any] = field(default_factory=dict)  # keys of a newer gateway

    _KEYS = ("n", "stride", "rows")

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "stride": self.stride, "rows": list(self.rows), **self.other}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeptSeries:
        return cls(n=int(d.get("n", 0)), stride=int(d.get("stride", 1)),
                   rows=list(d.get("rows", [])), other=_rest(d, cls._KEYS))


@dataclass(slots=True)
class KeptSamples:
    """The samples kept for the stop message (1.6 StopTxn*Data, 2.0.1 TxEnded*)."""

    begin: list[Any] | None = None  # the packed Transaction.Begin sample
    series: dict[str, KeptSeries] = field(default_factory=dict)  # by context: SERIES
    other: dict[str, Any] = field(default_factory=dict)  # kinds of a newer gateway

    def __bool__(self) -> bool:
        return self.begin is not None or bool(self.series) or bool(self.other)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {} if self.begin is None else {BEGIN: list(self.begin)}
        out.update((context, s.to_dict()) for context, s in self.series.items())
        out.update(self.other)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeptSamples:
        begin = d.get(BEGIN)
        return cls(begin=None if begin is None else list(begin),
                   series={c: KeptSeries.from_dict(d[c]) for c in SERIES if d.get(c) is not None},
                   other=_rest(d, (BEGIN, *SERIES)))


@dataclass(slots=True)
class TxFacts:
    """One transaction's version-layer facts; each field is named as its JSON key."""

    # 2.0.1: the seqNo of the transaction's next event (0: none sent yet).
    seq_no: int = 0
    # 2.0.1: the idToken's type, for the Started event.
    token_type: str | None = None
    # 2.0.1: the RequestStartTransaction's remoteStartId, for the Started event.
    remote_start_id: int | None = None
    # The reservation the session used (1.6 StartTransaction / 2.0.1 Started reservationId).
    reservation_id: int | None = None
    # 2.0.1 TxStartPoint: False until the transaction starts (EnergyTransfer: at the first
    # power); True once Started was queued; None: never deferred (1.6) - read `is_started`.
    started: bool | None = None
    # 2.0.1: the chargingState the CSMS last heard of (ChargingStateChanged).
    charging_state: str | None = None
    # 2.1: the operationMode the CSMS last heard of (OperationModeChanged).
    operation_mode: str | None = None
    # 2.0.1: the rate the CSMS last heard of (ChargingRateChanged), W.
    rate_reported_w: float | None = None
    # MaxEnergyOnInvalidId: the register (Wh) the session may reach, and whether it did (held
    # at 0 W since).
    energy_cap_wh: int | None = None
    energy_limited: bool = False
    # The meter values kept for the stop message (domain.metering.keep).
    kept: KeptSamples = field(default_factory=KeptSamples)
    # Keys this gateway does not know (a newer gateway's journal): written back unchanged.
    other: dict[str, Any] = field(default_factory=dict)

    _KEYS = ("seq_no", "token_type", "remote_start_id", "reservation_id", "started",
             "charging_state", "operation_mode", "rate_reported_w", "energy_cap_wh",
             "energy_limited", KEPT)

    @property
    def is_started(self) -> bool:
        """Whether the transaction reached its TxStartPoint (the CSMS knows of it)."""
        return self.started is not False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (TxRecord.data); new containers, so the record does not share them."""
        out: dict[str, Any] = {}
        if self.seq_no:
            out["seq_no"] = self.seq_no
        for key in ("token_type", "remote_start_id", "reservation_id", "started",
                    "charging_state", "operation_mode", "rate_reported_w", "energy_cap_wh"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.energy_limited:
            out["energy_limited"] = True
        if self.kept:
            out[KEPT] = self.kept.to_dict()
        out.update(self.other)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TxFacts:
        """From the JSON form; numbers are converted as the readers of the untyped dict did."""

        def opt(key: str, kind: type[Any]) -> Any:
            value = d.get(key)
            return None if value is None else kind(value)

        kept = d.get(KEPT)
        return cls(
            seq_no=int(d.get("seq_no", 0)),
            token_type=d.get("token_type"),
            remote_start_id=d.get("remote_start_id"),
            reservation_id=d.get("reservation_id"),
            started=opt("started", bool),
            charging_state=d.get("charging_state"),
            operation_mode=d.get("operation_mode"),
            rate_reported_w=opt("rate_reported_w", float),
            energy_cap_wh=opt("energy_cap_wh", int),
            energy_limited=bool(d.get("energy_limited", False)),
            kept=KeptSamples() if not kept else KeptSamples.from_dict(kept),
            other=_rest(d, cls._KEYS),
        )

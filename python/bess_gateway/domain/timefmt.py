"""OCPP timestamps: RFC 3339 in UTC with millisecond precision and a 'Z'."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """A CSMS's dateTime as an aware UTC datetime; ValueError when unreadable.

    One without a zone is UTC, as the schema layer (ocppj/schemas.py) takes it: `astimezone` on a
    naive datetime would read it in the gateway's local zone and shift every expiry, start and
    retrieve time by the machine's UTC offset.
    """
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

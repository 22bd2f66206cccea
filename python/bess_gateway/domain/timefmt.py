"""OCPP timestamps: RFC 3339 in UTC with millisecond precision and a 'Z'."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)

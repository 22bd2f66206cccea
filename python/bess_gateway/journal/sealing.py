"""idTags in the journal: keyed hashes everywhere, AES-GCM sealed where a queued message must
still carry the tag itself.

idTags are stored only as keyed hashes (`hash_id_tag`), with a random key kept in the journal.
The one exception is a message still waiting in the outbox (a StartTransaction must carry its
idTag, a 2.0.1 TransactionEvent Started its idToken): its `idTag` / `idToken.idToken` is sealed
with AES-GCM under a second random key in the meta table (so the tag never appears in clear in
the file, nor in a copy of the outbox rows), tagged with its hash so `forget_id_tag` finds it,
and the row is deleted, its pages zeroed (`secure_delete`), once the CSMS has answered. Both keys
live in the same file: this keeps tags out of dumps, logs, support bundles and forensic greps,
not away from someone holding the whole file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bess_gateway.journal.db import Database, JournalError

ID_TAG_HASH_CHARS = 32

# Where a queued payload carries an identifier: 1.6 `idTag`; 2.0.1 `idToken.idToken` (and a
# `groupIdToken.idToken`). Each is sealed (the 2.0.1 token's type stays readable).
_TOKEN_KEYS = ("idToken", "groupIdToken")


def hash_id_tag(id_tag: str, key: bytes) -> str:
    """HMAC-SHA256 of an idTag, hex, truncated to 32 characters (128 bits)."""
    digest = hmac.new(key, id_tag.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:ID_TAG_HASH_CHARS]


class Sealing:
    """The journal's two keys (a store of two meta rows) and what is done with them."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._key = self._meta_secret("id_tag_key")
        self._seal_key = AESGCM(self._meta_secret("outbox_key"))

    def _meta_secret(self, name: str) -> bytes:
        """A random 32-byte key made on first use and kept in the meta table."""
        with self._db.write() as c:
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                (name, secrets.token_bytes(32)),
            )
        return bytes(self._db.read("SELECT value FROM meta WHERE key = ?", (name,))[0][0])

    def hash_id_tag(self, id_tag: str) -> str:
        """The idTag's keyed hash under this journal's key (what we store and compare)."""
        return hash_id_tag(id_tag, self._key)

    def seal(self, endpoint_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        out = _id_holders_copied(payload)
        for holder, key in id_slots(out):
            tag = holder[key]
            if not isinstance(tag, str):
                continue
            nonce = secrets.token_bytes(12)
            # The endpoint id as associated data: a sealed tag cannot move to another endpoint.
            box = self._seal_key.encrypt(nonce, tag.encode("utf-8"), endpoint_id.encode("utf-8"))
            holder[key] = {"sealed": base64.b64encode(nonce + box).decode("ascii"),
                           "hash": self.hash_id_tag(tag)}
        return out

    def unseal(self, endpoint_id: str, payload: Any) -> Any:
        if not isinstance(payload, dict):
            return payload
        out = _id_holders_copied(payload)
        for holder, key in id_slots(out):
            sealed = holder[key]
            if not isinstance(sealed, dict) or "sealed" not in sealed:
                continue
            try:
                raw = base64.b64decode(sealed["sealed"])
                tag = self._seal_key.decrypt(raw[:12], raw[12:], endpoint_id.encode("utf-8"))
            except (InvalidTag, ValueError, TypeError) as e:
                raise JournalError(
                    f"journal {self._db.path}: a sealed idTag cannot be opened: {e}") from e
            holder[key] = tag.decode("utf-8")
        return out


def _id_holders_copied(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of `payload` whose identifier-holding dicts are copies too (safe to rewrite)."""
    out = dict(payload)
    for key in _TOKEN_KEYS:
        if isinstance(out.get(key), dict):
            out[key] = dict(out[key])
    return out


def id_slots(payload: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Where `payload` holds an identifier: (the dict holding it, its key) pairs."""
    slots: list[tuple[dict[str, Any], str]] = []
    if "idTag" in payload:
        slots.append((payload, "idTag"))
    for key in _TOKEN_KEYS:
        token = payload.get(key)
        if isinstance(token, dict) and "idToken" in token:
            slots.append((token, "idToken"))
    return slots

"""Firmware update of the whole gateway: download with retries, verify, install, restart.

A firmware update concerns the gateway process, not one endpoint: one job at a time for all
endpoints. Its statuses go to the one endpoint that asked (through its `notify`), so a CSMS
never hears about an update another CSMS ordered.

Steps and statuses (names as in OCPP 2.0.1 / the 1.6 security extension; the 1.6 translation
drops the ones plain FirmwareStatusNotification does not know):

  wait for retrieveDate -> Downloading -> Downloaded | DownloadFailed
  (signed) -> SignatureVerified | InvalidSignature (the file is deleted, nothing installed)
  wait until no transaction is open on any endpoint
  -> Installing -> Installed | InstallationFailed -> restart the process

Install = run the configured installer command (`[gateway] firmware_installer`, split like a
shell would, no shell involved) with the firmware file's path as its last argument; exit code 0
is success. Without an installer every install fails (InstallationFailed), with a clear log.

A second request while a job runs (OCPP 2.0.1 L01.FR.24, followed by both versions): a job of the
same endpoint that is not installing yet is cancelled and replaced (2.0.1 and 1.6 signed answer
AcceptedCanceled). Once installing (or when another endpoint ordered the running job) it cannot
be cancelled: 2.0.1 and 1.6 signed answer Rejected (L01.FR.27), while a plain 1.6 UpdateFirmware,
whose answer has no status, is kept (`enqueue`): journaled as a fact, one per endpoint (a newer
one of the same endpoint replaces it), and started when the running job ends (failed: at once;
Installed: in the restarted process, `resume`). No request is dropped without a status.

Restart: after Installed, `request_restart()` is called; the gateway then stops cleanly (sessions
are already over) and `run` exits with EXIT_RESTART (75) so systemd (`Restart=on-failure` or
`RestartForceExitStatus=75`) or another supervisor starts the new version. An exec() in place
would skip the supervisor's view of the restart and keep file descriptors of the old process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import shlex
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from bess_gateway.maintenance.transfer import TransferError, download, safe_url, with_retries

log = logging.getLogger("bess_gateway.maintenance")

EXIT_RESTART: Final = 75  # the process exits with this after an installed update: restart me
DEFAULT_RETRIES: Final = 2
DEFAULT_RETRY_INTERVAL_S: Final = 30


def retry_policy(p: dict[str, Any]) -> tuple[int, int]:
    """(retries, retry interval s) of an UpdateFirmware request, either version (same keys)."""
    retries = p.get("retries")
    interval = p.get("retryInterval")
    return (DEFAULT_RETRIES if retries is None else max(0, int(retries)),
            DEFAULT_RETRY_INTERVAL_S if interval is None else max(0, int(interval)))
INSTALLER_TIMEOUT_S: Final = 15 * 60
IDLE_POLL_S: Final = 0.5  # how often an install waiting for sessions to end looks again

Notify = Callable[[str], Awaitable[None]]
PENDING_FACT: Final = "firmware_pending"  # journal fact: the kept 1.6 requests (JSON list)


class Facts(Protocol):
    """Where kept requests survive a restart (the journal's small facts)."""

    def put_fact(self, key: str, value: str) -> None: ...
    def get_fact(self, key: str) -> str | None: ...
    def drop_fact(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Signed:
    """What SignedUpdateFirmware adds: the signer's certificate (PEM) and the signature."""

    certificate_pem: str
    signature: bytes


@dataclass(frozen=True, slots=True)
class FirmwareRequest:
    location: str
    retrieve_at: datetime
    retries: int = DEFAULT_RETRIES
    retry_interval_s: int = DEFAULT_RETRY_INTERVAL_S
    install_at: datetime | None = None
    signed: Signed | None = None
    request_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A kept request (plain 1.6 only: never signed) as the journal stores it."""
        assert self.signed is None, "only plain requests are kept"
        return {"location": self.location, "retrieve_at": self.retrieve_at.isoformat(),
                "retries": self.retries, "retry_interval_s": self.retry_interval_s,
                "request_id": self.request_id}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FirmwareRequest:
        return cls(location=str(d["location"]),
                   retrieve_at=datetime.fromisoformat(str(d["retrieve_at"])),
                   retries=int(d["retries"]), retry_interval_s=int(d["retry_interval_s"]),
                   request_id=d.get("request_id"))


# Firmware statuses that are also security events (Security Whitepaper, 2.0.1 appendix).
SECURITY_EVENTS: Final = {"Installed": "FirmwareUpdated",
                          "InvalidSignature": "InvalidFirmwareSignature"}


def decode_signature(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def check_signing_certificate(pem: str, roots: Iterable[x509.Certificate]) -> bool:
    """True when `pem` is a certificate issued (directly) by one of `roots` and valid now."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return False
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    for root in roots:
        try:
            cert.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):  # other issuer, key type, signature
            continue
        return True
    return False


def check_signed(certificate_pem: str, signature: str | None,
                 roots: Iterable[x509.Certificate]) -> tuple[str, Signed | None]:
    """What a signed update request (1.6 SignedUpdateFirmware, 2.0.1 UpdateFirmware with a
    signature) is answered: ("Accepted", Signed), ("InvalidCertificate", None) when the signer
    does not chain to an installed manufacturer root, ("Rejected", None) for a bad signature
    text."""
    if not check_signing_certificate(certificate_pem, roots):
        return "InvalidCertificate", None
    raw = decode_signature(signature) if signature is not None else None
    if raw is None:
        return "Rejected", None
    return "Accepted", Signed(certificate_pem, raw)


def verify_file(path: Path, signed: Signed) -> bool:
    """The signature over the file's bytes (SHA-256; RSA PKCS#1 v1.5 or ECDSA) is the signer's.

    The file is hashed in chunks (an image may be large) and the digest verified as prehashed.
    """
    try:
        key = x509.load_pem_x509_certificate(signed.certificate_pem.encode()).public_key()
    except ValueError:
        return False
    digest = hashes.Hash(hashes.SHA256())
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    value = digest.finalize()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signed.signature, value, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signed.signature, value, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            return False
    except InvalidSignature:
        return False
    return True


class FirmwareUpdater:
    """The gateway's one firmware job and its current status."""

    def __init__(
        self,
        folder: Path,
        *,
        installer: str | None,
        sessions_open: Callable[[], bool],
        request_restart: Callable[[], None],
        facts: Facts | None = None,
    ) -> None:
        self.folder = folder
        self.installer = installer
        self.sessions_open = sessions_open
        self.request_restart = request_restart
        self.status = "Idle"
        self.request: FirmwareRequest | None = None
        self.owner: str | None = None  # endpoint id that asked
        self._task: asyncio.Task[None] | None = None
        self._ended = True  # the job reached its last status (its task may still be reporting)
        self._facts = facts
        # Kept requests in arrival order, (owner, request); see `enqueue`.
        self.pending: list[tuple[str, FirmwareRequest]] = self._load_pending()
        self._notifies: dict[str, Notify] = {}  # this process's notify of a kept request
        # The notify of an endpoint by id, for requests kept by an earlier process (`resume`).
        self._lookup: Callable[[str], Notify | None] | None = None

    @property
    def busy(self) -> bool:
        return not self._ended and self._task is not None and not self._task.done()

    def start(self, req: FirmwareRequest, notify: Notify, owner: str) -> bool:
        """Start the job; False (nothing started) while another one runs."""
        if self.busy:
            return False
        self.request = req
        self.owner = owner
        self.status = "Idle"
        self._ended = False
        self._task = asyncio.get_running_loop().create_task(
            self._run(req, notify, owner), name=f"firmware:{owner}")
        return True

    # -- kept requests ------------------------------------------------------------------------
    def _load_pending(self) -> list[tuple[str, FirmwareRequest]]:
        text = self._facts.get_fact(PENDING_FACT) if self._facts is not None else None
        if not text:
            return []
        try:
            return [(str(d["owner"]), FirmwareRequest.from_json(d)) for d in json.loads(text)]
        except (ValueError, KeyError, TypeError) as e:
            log.error("firmware: kept update requests unreadable, dropped: %s (%s)", e, text)
            return []

    def _save_pending(self) -> None:
        if self._facts is None:
            return
        if self.pending:
            self._facts.put_fact(PENDING_FACT, json.dumps(
                [{"owner": owner, **req.to_json()} for owner, req in self.pending]))
        else:
            self._facts.drop_fact(PENDING_FACT)

    def enqueue(self, req: FirmwareRequest, notify: Notify, owner: str) -> None:
        """Keep a request that cannot start now; it starts when the running job ends.

        Durable before this returns (the answer goes out after it); a newer request of the same
        endpoint replaces its older kept one (as it would replace a job that had not started).
        """
        self.pending = [(o, r) for o, r in self.pending if o != owner]
        self.pending.append((owner, req))
        self._notifies[owner] = notify
        self._save_pending()
        log.info("firmware: update from %s ordered by %s kept until the update ordered by %s "
                 "(%s) ends", safe_url(req.location), owner, self.owner, self.status)

    def resume(self, lookup: Callable[[str], Notify | None]) -> None:
        """At start-up: `lookup` gives an endpoint's notify; start the first kept request."""
        self._lookup = lookup
        if self.pending:
            log.info("firmware: %d kept update request(s) from before the restart",
                     len(self.pending))
        self._start_next()

    def _start_next(self) -> None:
        while self.pending and not self.busy:
            owner, req = self.pending.pop(0)
            self._save_pending()
            notify = self._notifies.pop(owner, None)
            if notify is None and self._lookup is not None:
                notify = self._lookup(owner)
            if notify is None:
                log.error("firmware: update from %s kept for %s dropped: that endpoint is no "
                          "longer a 1.6 endpoint of this gateway", safe_url(req.location), owner)
                continue
            log.info("firmware: starting the update kept for %s", owner)
            self.start(req, notify, owner)

    @property
    def cancellable(self) -> bool:
        """A running job that has not started installing (an installer is never cut off)."""
        return self.busy and self.status not in ("Installing", "Installed")

    async def cancel(self) -> bool:
        """Cancel a job that may still be cancelled (see `cancellable`); True if one was."""
        if not self.cancellable:
            return False
        await self.close()
        self.status = "Idle"
        self._ended = True
        log.info("firmware: update for %s cancelled", self.owner)
        return True

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _set(self, status: str, notify: Notify, *, final: bool = False) -> None:
        # A failed job is over before the CSMS hears of it, so it may order the next one at once;
        # Installed stays busy: the restart follows.
        self.status = "Idle" if final else status
        self._ended = final
        try:
            await notify(status)
        except Exception as e:  # the job goes on even when the CSMS cannot be told
            log.warning("firmware: could not report %s: %s", status, e)

    async def _run(self, req: FirmwareRequest, notify: Notify, owner: str) -> None:
        try:
            await self._steps(req, notify, owner)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("firmware: update for %s failed unexpectedly", owner)
            self.status = "Idle"
            self._ended = True
        # A job that ended without installing hands over to a kept request (after Installed,
        # the restarted process does: `resume`).
        if self._ended and asyncio.current_task() is self._task:
            self._start_next()

    async def _steps(self, req: FirmwareRequest, notify: Notify, owner: str) -> None:
        delay = (req.retrieve_at - datetime.now(UTC)).total_seconds()
        if delay > 0:
            log.info("firmware: download from %s scheduled in %.0f s", safe_url(req.location),
                     delay)
            await self._set("DownloadScheduled", notify)
            await asyncio.sleep(delay)
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        # Unique: a replaced job's download (a thread cancellation cannot stop) must not write
        # into its replacement's file, nor two jobs of one second share a name.
        dest = self.folder / f"firmware-{stamp}-{secrets.token_hex(4)}.bin"
        await self._set("Downloading", notify)
        try:
            size = await with_retries(lambda: download(req.location, dest),
                                      retries=req.retries, interval_s=req.retry_interval_s,
                                      what=f"firmware download for {owner}")
        except TransferError as e:
            log.error("firmware: download failed: %s", e)
            await self._set("DownloadFailed", notify, final=True)
            return
        log.info("firmware: downloaded %d bytes from %s to %s", size, safe_url(req.location),
                 dest)
        await self._set("Downloaded", notify)

        if req.signed is not None:
            if not await asyncio.to_thread(verify_file, dest, req.signed):
                logging.getLogger("bess_gateway.security").warning(
                    "InvalidFirmwareSignature: firmware from %s ordered by %s failed signature "
                    "verification; not installed", safe_url(req.location), owner)
                dest.unlink(missing_ok=True)
                await self._set("InvalidSignature", notify, final=True)
                return
            await self._set("SignatureVerified", notify)

        if req.install_at is not None:
            delay = (req.install_at - datetime.now(UTC)).total_seconds()
            if delay > 0:
                await self._set("InstallScheduled", notify)
                await asyncio.sleep(delay)
        if self.sessions_open():
            log.info("firmware: install waits until every open transaction has ended")
            while self.sessions_open():  # noqa: ASYNC110
                await asyncio.sleep(IDLE_POLL_S)

        await self._set("Installing", notify)
        if await self._install(dest):
            await self._set("Installed", notify)
            log.warning("firmware: installed; restarting the gateway (exit code %d)",
                        EXIT_RESTART)
            self.request_restart()
        else:
            await self._set("InstallationFailed", notify, final=True)

    async def _install(self, path: Path) -> bool:
        if not self.installer:
            log.error("firmware: no installer configured ([gateway] firmware_installer); "
                      "%s was downloaded but cannot be installed", path)
            return False
        argv = [*shlex.split(self.installer), str(path)]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        except OSError as e:
            log.error("firmware: installer %r could not start: %s", argv[0], e)
            return False
        try:
            async with asyncio.timeout(INSTALLER_TIMEOUT_S):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.error("firmware: installer timed out after %d s", INSTALLER_TIMEOUT_S)
            return False
        text = out.decode(errors="replace").strip()[-2000:]
        if proc.returncode != 0:
            log.error("firmware: installer exited with %s: %s", proc.returncode, text)
            return False
        log.info("firmware: installer succeeded: %s", text)
        return True

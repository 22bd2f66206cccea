"""TLS client contexts for the CSMS link, built once per inputs and certificate-store version.

Building a context costs far more than the handshake that uses it: ``SSLContext()`` about
0.4 ms, a ``ca_file`` about 1 ms, the system store (``load_default_certs``) about 35 ms, and
the operator's installed roots are parsed again by the store every time. Every connection
attempt used to pay that, so a reconnect wave of 1000 endpoints (or 1000 endpoints retrying a
CSMS that is down) spent its CPU building the same context again and again. Here a context is
built once and reused until something it was built from changes.

The cache key has two halves:

``ClientTls`` (the slot): what the context is made of, as configured: the CSMS (its URL without
the station id), the effective security profile, the ``ca_file``, the operator's store folder
and, for profile 3, the client identity's files (the station's ``client.pem`` from
CertificateSigned, else ``cert_file``/``key_file``). A changed csms_url (config or a 2.0.1
network profile), a raised profile or a newly installed client certificate is another slot.

``store_version`` (the version): the in-process generation of the certificate store
(``certificates.generation``, bumped by every write and delete through the store: an installed
or deleted CA, a CertificateSigned chain) plus a fingerprint (inode, size, mtime and ctime in
ns) of every file the context loads: the ``ca_file``, each installed CentralSystemRootCertificate
and their folder, the client certificate and key, and the system store's file and folder when
that is what the context trusts. An operator who edits or replaces a file by hand is seen at the
next connection attempt; the generation covers what the store itself wrote even if a rewrite
kept all of that (same size within one timestamp tick on a reused inode). A hand edit is only
missed if it keeps the inode and size and lands in the same timestamp tick as the stat before it
(many kernels stamp files with the timer tick, a few ms; the 6.18 test box stamps them at ns).

Nothing stale is ever used: the version is taken *before* the files are read, so a change while
a context is being built gives a version that no longer matches at the next attempt, which
builds again. A slot keeps only its newest context.

Sharing: a context depends on nothing but its slot's inputs (no station id, no password: Basic
auth is an HTTP header and the host name is checked per connection), so endpoints with the same
slot share one object: all profile-2 endpoints of one operator on one CSMS use a single context
(and one parsed copy of the CA store in memory instead of one per endpoint). Profile-3
endpoints differ by their client identity, so each has its own. Operators never share one:
the store folder is part of the slot (trust domains, docs/security.md). A shared context is
never changed after it is built; ``ssl`` allows one context to serve many connections.

Used from the event loop only (the endpoints' connection attempts), so there is no lock.
"""

from __future__ import annotations

import os
import ssl
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from bess_gateway.security.certificates import CENTRAL_SYSTEM_ROOT, CertificateStore, generation

# Slots are per CSMS x store x profile x client identity: about one per operator for profile 2,
# one per endpoint for profile 3. The bound only matters if a CSMS keeps sending new URLs
# (network profiles); the least recently used slot goes first.
MAX_SLOTS = 4096

FileStamp = tuple[int, int, int, int] | None  # inode, size, mtime ns, ctime ns; None: missing


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The inputs of one client context (see the module docstring: the cache slot)."""

    csms: str  # the CSMS URL without the station id
    profile: int  # effective security profile
    store: Path  # the operator's certificate store (its installed CSMS roots are trusted)
    ca_file: Path | None = None
    # Profile 3: the client certificate chain and its key; key None: cert_file holds both
    # (the station's client.pem). None for profiles below 3.
    cert_file: Path | None = None
    key_file: Path | None = None


def _stamp(path: Path | str | None) -> FileStamp:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _folder(path: Path) -> tuple[FileStamp, tuple[tuple[str, FileStamp], ...]]:
    """The folder and each PEM file in it (what ``CertificateStore.installed`` reads)."""
    try:
        names = sorted(e.name for e in os.scandir(path) if e.name.endswith(".pem"))
    except OSError:
        names = []
    return _stamp(path), tuple((name, _stamp(path / name)) for name in names)


def store_version(spec: ClientTls) -> tuple[object, ...]:
    """The certificate-store version of ``spec``'s context: changes with anything it loads."""
    roots = _folder(spec.store / CENTRAL_SYSTEM_ROOT)
    system: tuple[object, ...] = ()
    if spec.ca_file is None:
        # The context may trust the system store (no installed root, or none readable);
        # SSL_CERT_FILE/DIR apply.
        paths = ssl.get_default_verify_paths()
        system = (paths.cafile, _stamp(paths.cafile), paths.capath, _stamp(paths.capath))
    return (generation(), _stamp(spec.ca_file), roots, _stamp(spec.cert_file),
            _stamp(spec.key_file), system)


def build(spec: ClientTls) -> ssl.SSLContext:
    """A new client context: TLS 1.2 or newer; the CSMS certificate must chain to the
    ``ca_file`` or a CentralSystemRootCertificate installed in the operator's store; the system
    store only when neither exists; profile 3 presents the client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the peer and its hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    cadata = CertificateStore(spec.store).pem(CENTRAL_SYSTEM_ROOT)
    if spec.ca_file is None and not cadata:
        context.load_default_certs()
    if spec.ca_file is not None:
        context.load_verify_locations(cafile=str(spec.ca_file))
    if cadata:
        context.load_verify_locations(cadata=cadata)
    if spec.profile == 3 and spec.cert_file is not None:
        context.load_cert_chain(str(spec.cert_file),
                                None if spec.key_file is None else str(spec.key_file))
    return context


class ContextCache:
    """Client contexts by slot, each with the store version it was built at."""

    def __init__(self, max_slots: int = MAX_SLOTS) -> None:
        self.max_slots = max_slots
        self.builds = 0  # contexts built (a figure for tests and benchmarks)
        self._slots: OrderedDict[ClientTls, tuple[tuple[object, ...], ssl.SSLContext]] = \
            OrderedDict()

    def get(self, spec: ClientTls) -> ssl.SSLContext:
        """The context for ``spec`` as its files are now: cached, or built (and then cached).
        A build that fails (a missing or unreadable file) raises and caches nothing."""
        version = store_version(spec)  # before reading anything: see the module docstring
        hit = self._slots.get(spec)
        if hit is not None and hit[0] == version:
            self._slots.move_to_end(spec)
            return hit[1]
        context = build(spec)
        self.builds += 1
        self._slots[spec] = (version, context)
        self._slots.move_to_end(spec)
        while len(self._slots) > self.max_slots:
            self._slots.popitem(last=False)
        return context

    def clear(self) -> None:
        self._slots.clear()


CACHE = ContextCache()  # the gateway's: one per process, shared by all endpoints


def client_context(spec: ClientTls) -> ssl.SSLContext:
    return CACHE.get(spec)

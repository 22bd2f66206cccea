"""OCPP on the wire, and the translators between OCPP messages and the domain.

- ``framing``, ``errors``, ``schemas``: OCPP-J, pure (no I/O, no clock): frames in and out, the
  one error table, JSON-schema validation of every payload.
- ``rpc``: ``RpcConnection``, one WebSocket's CALL/CALLRESULT exchange (timeouts, one CALL in
  flight, handler dispatch) on top of the pure parts.
- ``v16``, ``v201``, ``v21``: one package per OCPP version. Each is a translator: a CSMS request
  becomes a command on the endpoint's services or the domain, and domain events and samples
  become that version's messages. They hold no state of their own beyond typed per-endpoint
  state objects their endpoint class owns.

May import: ``domain``, ``endpoint`` (the context and services a translator acts on),
``security``, ``maintenance``, ``journal``, ``config``. The wire parts (framing, errors, schemas,
rpc) import nothing of the gateway but each other. Nothing below (``endpoint``, ``domain``,
``journal``, ``control``) imports a version package; the gateway picks the version's endpoint
class. See docs/architecture.md.
"""

"""One OCPP endpoint (a charging-station identity), whatever its OCPP version.

- ``link``: the connection lifecycle (connect with back-off, boot until Accepted, heartbeat,
  status reporting, reconnect, shutdown) and the ``Context`` the feature blocks share.
- ``services``: ``EndpointServices``, the typed services object built once per endpoint and
  reached as ``ctx.services``. The services, used by every version's translator: ``sessions``
  (start/stop and the meter-value loops), ``outbox`` (the journaled message queue and its
  delivery policy), ``settling`` (a stop message waits for the final meter register),
  ``authorizer`` (local list, cache, Authorize), ``charging_limits`` and
  ``smart_charging_service`` (the station's installed profiles and the schedules they hand the
  core), ``reservation_service``, ``log_requests`` (GetLog), ``pacing`` (the gateway-wide token
  bucket for replayed messages).
- Security as an endpoint lives it: ``connection_security`` (URL, TLS context and Basic auth
  under the security profile; security events of a failed connection),
  ``certificate_operations`` (what a CSMS may install, delete or have signed),
  ``trust_domain`` (which operator may act on what).

Direction: CSMS -> ``ocpp`` translator -> endpoint services -> ``domain`` -> ``control``.
May import: ``domain``, ``journal``, ``control``, ``security``, ``maintenance``, the wire parts of
``ocpp`` (``rpc``, ``errors``, ``framing``, ``schemas``), ``config``. Never a version package
(``ocpp.v16``/``v201``/``v21``), ``ops`` or ``gateway`` (tests/test_package_layers.py).
"""

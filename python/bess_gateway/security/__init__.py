"""Security primitives, version-agnostic: certificate stores (one per operator: trust domains),
station key and CSR, security-profile rules, security events. What an endpoint does with them
(TLS for its CSMS link, certificate operations, trust-domain checks) is in ``endpoint``; OCPP 1.6
(Security Whitepaper) and 2.0.1 translate to those.

May import ``domain``, ``journal``, ``config`` and the wire parts of ``ocpp``; never
``endpoint``, a version package, ``ops`` or ``gateway`` (tests/test_package_layers.py).
``profiles`` imports nothing of the gateway: ``config`` checks identities with it.
"""

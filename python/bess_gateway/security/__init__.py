"""Version-agnostic security: certificate stores (one per operator: trust domains), station key
and CSR, security-profile rules, TLS for the CSMS link, security events. OCPP 1.6 (Security
Whitepaper) and 2.0.1 translate to these.

May import ``domain``, ``journal``, ``config`` and the endpoint ``Context`` type; never a version
package.
"""

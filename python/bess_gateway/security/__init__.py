"""Version-agnostic security: certificate store, station key and CSR, security profile rules,
security events. OCPP 1.6 (Security Whitepaper) and 2.0.1 translate to these."""

"""Gateway maintenance, version-agnostic: firmware download/verify/install, diagnostics and log
bundles and their upload. OCPP 1.6 and 2.0.1 only translate requests and statuses to and from it.
"""

"""Gateway maintenance, version-agnostic: firmware download/verify/install, diagnostics and log
bundles and their upload (``transfer``: FTP/HTTP), GetLog requests. OCPP 1.6 and 2.0.1 only
translate requests and statuses to and from it.

May import ``domain``, ``journal``, ``security``, ``config``; never ``endpoint`` internals
beyond the context type, nor a version package.
"""

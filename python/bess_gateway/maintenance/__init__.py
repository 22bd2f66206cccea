"""Gateway maintenance, version-agnostic: firmware download/verify/install, diagnostics and log
bundles and their upload (``transfer``: FTP/HTTP), shared by all endpoints. OCPP 1.6 and 2.0.1
only translate requests and statuses to and from it (through ``endpoint.log_requests`` and the
version packages' firmware and diagnostics blocks).

May import ``domain``, ``journal``, ``security``, ``config``; never ``endpoint``, ``ocpp``,
``ops`` or ``gateway`` (tests/test_package_layers.py).
"""

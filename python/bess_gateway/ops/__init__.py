"""What an operator sees of a running gateway: Prometheus metrics and the status page
(``metrics``, ``status_page.html``), log files (``logs``), systemd readiness and watchdog
(``sdnotify``).

May import everything below the gateway (``endpoint``, ``ocpp``, ``domain``, ``journal``,
``config``); the gateway itself only as a typing protocol it is handed (``metrics.GatewayView``),
so ``gateway`` -> ``ops`` is the only direction.
"""

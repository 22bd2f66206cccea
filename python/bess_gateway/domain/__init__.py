"""The version-agnostic domain: settings, stations and their sessions, authorization, metering,
reservations, smart-charging evaluation, the alarm table and the site calendar. OCPP versions
translate to and from it.

Pure where it can be: time comes in as a parameter or a clock callable. May import ``config``
and the control core's Python face (``control``) only; never ``endpoint``, ``ocpp``,
``journal`` or ``ops``.
"""

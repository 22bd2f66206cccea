"""The version-agnostic domain: settings, stations, sessions. OCPP versions translate to it."""

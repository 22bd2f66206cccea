"""OCPP 2.0.1: the shared domain translated into 2.0.1 messages, a module per functional block."""

"""OCPP 2.1 endpoints: the 2.0.1 translator with one bidirectional EVSE and the Q block (V2X)."""

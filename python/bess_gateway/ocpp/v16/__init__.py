"""OCPP 1.6J: translation between 1.6 messages and the domain model."""

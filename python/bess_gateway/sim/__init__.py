"""PCS/BMS simulator: a battery + PCS model (battery.py) served over Modbus TCP (server.py).

The register maps are data (``registers/<profile>.toml``, loaded by regmap.py). This package
imports nothing heavy at import time so the pure parts can be used without pymodbus.

May import its own modules and the package version only: the simulator stands in for hardware and
knows nothing of OCPP or the gateway.
"""

"""Gateway configurations on the test's simulator and CSMS, and a real `bess-gateway run`
process of one: SIGKILLed when the block ends (crash tests) unless it exited before (SIGTERM)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path


def one_endpoint_config(tmp_path: Path, pcs_port: int, csms_url: str, endpoint_id: str, *,
                        ocpp_version: str = "1.6", sample_interval_s: int | None = None) -> Path:
    """gateway.toml in `tmp_path` (data in tmp_path/var) for one endpoint."""
    return endpoints_config(tmp_path, pcs_port, csms_url, {endpoint_id: ocpp_version},
                            sample_interval_s=sample_interval_s)


def endpoints_config(tmp_path: Path, pcs_port: int, csms_url: str, versions: Mapping[str, str],
                     *, sample_interval_s: int | None = None) -> Path:
    """gateway.toml in `tmp_path` (data in tmp_path/var): one endpoint per id in `versions`,
    speaking the OCPP version it maps to."""
    cfg_path = tmp_path / "gateway.toml"
    interval = "" if sample_interval_s is None else \
        f"meter_sample_interval_s = {sample_interval_s}\n"
    endpoints = "".join(f"""
[[endpoint]]
id = "{endpoint_id}"
csms_url = "{csms_url}"
ocpp_version = "{version}"
{interval}""" for endpoint_id, version in versions.items())
    cfg_path.write_text(f"""
[gateway]
data_dir = "{tmp_path / 'var'}"
metrics_listen = ""

[pcs]
port = {pcs_port}
{endpoints}""")
    return cfg_path


@contextlib.asynccontextmanager
async def killed_at_exit(cfg_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """`bess-gateway run --config cfg_path`, SIGKILLed the moment the block ends (however it
    ends: no clean shutdown, no timed commit), its output in gateway.log next to the config."""
    with (cfg_path.parent / "gateway.log").open("a") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bess_gateway", "run", "--config", str(cfg_path),
            stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            async with asyncio.timeout(10):
                await proc.wait()

"""The gateway's maintenance service: one firmware updater and the upload jobs, shared by all
endpoints (a firmware update replaces the whole process; bundles describe the whole gateway).
"""

from __future__ import annotations

from dataclasses import dataclass

from bess_gateway.maintenance.diagnostics import Uploads
from bess_gateway.maintenance.firmware import FirmwareUpdater


@dataclass(frozen=True, slots=True)
class Maintenance:
    firmware: FirmwareUpdater
    uploads: Uploads

    async def close(self) -> None:
        await self.firmware.close()
        await self.uploads.close()

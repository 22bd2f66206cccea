"""The live status page in a real headless browser (Debian chromium): its JavaScript fills the
endpoints table from /status and draws the plot."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

from httpget import get
from waiting import until

from bess_gateway.demo.csms import CsmsServer

CHROMIUM = shutil.which("chromium") or "chromium"


async def chromium(tmp_path: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(90):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


async def test_page_shows_endpoints_and_plot(gateway_factory, csms: CsmsServer,
                                             tmp_path: Path) -> None:
    gw = await gateway_factory(3, metrics_listen="127.0.0.1:0")
    for sid in gw.endpoints:
        await until(lambda s=sid: gw.endpoints[s].ctx.online, 20)
    await csms.call("DEMO-02", "RemoteStartTransaction", {"idTag": "PAGE-TAG", "connectorId": 1})
    await until(lambda: len(gw.metrics.history) >= 3, 10)  # something to plot
    url = f"http://127.0.0.1:{gw.metrics.port}/"

    # The served HTML has an empty table: rows can only come from the page's script.
    _, _, raw = await get(gw.metrics.port, "/")
    assert b"DEMO-01" not in raw

    dom = await chromium(tmp_path, "--dump-dom", url)
    assert 'data-loaded="1"' in dom
    rows = re.findall(r'<tr data-endpoint="([^"]+)">(.*?)</tr>', dom, re.S)
    assert [r[0] for r in rows] == ["DEMO-01", "DEMO-02", "DEMO-03"]
    cells = dict(rows)
    assert "online" in cells["DEMO-01"] and "Accepted" in cells["DEMO-01"]
    assert "c1 tx" in cells["DEMO-02"]  # the session shows up
    assert "PAGE-TAG" not in dom
    assert "PCS link: up" in dom

    shot = tmp_path / "status.png"
    await chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,800", url)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

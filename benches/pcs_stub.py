"""A minimal Modbus TCP PCS for load benchmarks: answers the generic map, timestamps writes.

The full simulator models a 600 kW PCS whose BMS limits would saturate the site and hide most
setpoint changes; this one reports limits far above any load, so every command that changes
allocated power shows as a changed setpoint at the PCS, and every write is timestamped with
time.monotonic() (CLOCK_MONOTONIC: comparable across processes on Linux).
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import threading
import time

# Read block 100..127 of the generic map, values chosen inside every protection window.
_BLOCK = [0] * 28
_BLOCK[0] = 2  # running
_BLOCK[3] = 4000  # AC 400.0 V
_BLOCK[4] = 5000  # 50.00 Hz
_BLOCK[5] = 7800  # DC 780.0 V
_BLOCK[7] = 500  # SoC 50.0 %
_BLOCK[8] = 990  # SoH 99.0 %
_BLOCK[9] = 250  # max cell 25.0 C
_BLOCK[10] = 240  # min cell 24.0 C
_BLOCK[11] = 3300  # cell mV
_BLOCK[12] = 3290
_BLOCK[13:15] = [0x3B9A, 0xCA00]  # BMS max discharge 1e9 W
_BLOCK[15:17] = [0x3B9A, 0xCA00]  # BMS max charge 1e9 W


class PcsStub:
    """Runs in its own thread and event loop so the tester's CSMS load cannot delay it."""

    def __init__(self) -> None:
        self.port = 0
        self.writes: list[tuple[float, int]] = []  # (monotonic time, setpoint W)
        self.setpoint = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pcs-stub", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        server = loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        server.close()
        loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                fc = pdu[0]
                if fc == 3:
                    addr, count = struct.unpack(">HH", pdu[1:5])
                    words = [_BLOCK[a - 100] if 100 <= a < 128 else 0
                             for a in range(addr, addr + count)]
                    body = bytes([3, 2 * count]) + struct.pack(f">{count}H", *words)
                elif fc == 16:
                    addr, count, _nbytes = struct.unpack(">HHB", pdu[1:6])
                    values = struct.unpack(f">{count}H", pdu[6:6 + 2 * count])
                    regs = dict(zip(range(addr, addr + count), values, strict=True))
                    if 1 in regs and 2 in regs:
                        sp = struct.unpack(">i", struct.pack(">HH", regs[1], regs[2]))[0]
                        self.writes.append((time.monotonic(), sp))
                        self.setpoint = sp
                        _BLOCK[1:3] = [regs[1], regs[2]]  # measured = commanded, instantly
                    body = bytes([16]) + struct.pack(">HH", addr, count)
                else:
                    body = bytes([fc | 0x80, 1])
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class PcsStubProcess:
    """The same stub in a process of its own, its writes streamed back over a pipe.

    In the tester's process the stub thread has to take the GIL from the CSMS, which holds it for
    about 1 ms per message it schema-validates (jsonschema): at 200 endpoints a setpoint write
    was timestamped up to tens of ms late, which the latency columns then charged to the gateway.
    Timestamps are taken in the child (CLOCK_MONOTONIC is system-wide), so a late read here only
    delays when the tester sees a write, never the time it records.
    """

    def __init__(self) -> None:
        self.port = 0
        self.writes: list[tuple[float, int]] = []
        self.setpoint = 0
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE,
                                      text=True, bufsize=1)
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline().split()[1])
        self._reader = threading.Thread(target=self._read, name="pcs-stub-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            t, sp = line.split()
            self.setpoint = int(sp)
            self.writes.append((float(t), int(sp)))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)


def _serve_forever() -> None:
    """The child of PcsStubProcess: `port N`, then one `time setpoint` line per write."""
    stub = PcsStub()
    stub.start()
    print(f"port {stub.port}", flush=True)
    seen = 0
    while True:
        time.sleep(0.0005)
        while seen < len(stub.writes):
            t, sp = stub.writes[seen]
            seen += 1
            print(f"{t:.6f} {sp}", flush=True)


if __name__ == "__main__":
    _serve_forever()

"""Run `bess-gateway run` with a sampling profiler on its event-loop thread, from SIGUSR1 on.

    BESS_LOAD_PROFILE=/tmp/gw.txt python benches/load.py --endpoints 200 --no-baseline

load.py starts the gateway through this wrapper when BESS_LOAD_PROFILE is set and sends SIGUSR1
when its measured window starts, so start-up and boot stay out of the profile. A thread samples
the main thread's stack every millisecond (sys._current_frames). What it shows is where the
event loop's *wall* time goes, blocking calls included: a sample can only be taken when the
loop thread lets go of the GIL, so calls that release it (SQLite, socket writes) are seen in
full and pure-Python work is undersampled. That is the view for latency (what holds every
endpoint up); for CPU, compare whole-process CPU of A/B runs (load.py's table) instead: cProfile
charges a clock read to every call and inflates call-heavy code several times over. Samples in
the loop's own wait (the outermost frame on top) count as idle. The report is written when the
gateway exits (SIGTERM is a normal stop).

An output name ending in `.prof` profiles with cProfile instead (deterministic, every Python
call; slower, and call-heavy code looks heavier than it is): where the loop thread's CPU goes,
function by function. Read it with `python -m pstats out.prof` (sort tottime, stats 40).
"""

from __future__ import annotations

import collections
import cProfile
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from bess_gateway.cli import main

INTERVAL_S = 0.001


class Sampler:
    def __init__(self) -> None:
        self.target = threading.main_thread().ident
        self.own: collections.Counter[str] = collections.Counter()
        self.cumulative: collections.Counter[str] = collections.Counter()
        self.busy = 0
        self.idle = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            frame = sys._current_frames().get(self.target)
            if frame is not None:
                self._take(frame)

    @staticmethod
    def _name(f: FrameType) -> str:
        code = f.f_code
        return f"{Path(code.co_filename).name}:{code.co_firstlineno}({code.co_name})"

    def _take(self, frame: FrameType) -> None:
        stack: list[str] = []
        f: FrameType | None = frame
        while f is not None:
            stack.append(self._name(f))
            f = f.f_back
        # The loop waits in C below the outermost Python frames (runner, cli, main).
        if frame.f_back is None or (frame.f_code.co_name in ("run", "run_until_complete")
                                    and "runners.py" in frame.f_code.co_filename):
            self.idle += 1
            return
        self.busy += 1
        self.own[stack[0]] += 1
        for name in set(stack):
            self.cumulative[name] += 1

    def report(self, out: str, top: int = 60) -> None:
        self._stop.set()
        busy = max(1, self.busy)
        lines = [f"samples: busy {self.busy}, idle {self.idle} (every {INTERVAL_S * 1000:g} ms)",
                 "", "self % | function"]
        lines += [f"{100 * n / busy:6.1f} | {k}" for k, n in self.own.most_common(top)]
        lines += ["", "cumulative % | function"]
        lines += [f"{100 * n / busy:6.1f} | {k}" for k, n in self.cumulative.most_common(top)]
        Path(out).write_text("\n".join(lines) + "\n")


def run(out: str, argv: list[str]) -> int:
    if out.endswith(".prof"):
        profile = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
        try:
            return main(argv)
        finally:
            profile.disable()
            profile.dump_stats(out)
    sampler = Sampler()
    signal.signal(signal.SIGUSR1, lambda *_: sampler.start())
    try:
        return main(argv)
    finally:
        sampler.report(out)


if __name__ == "__main__":
    raise SystemExit(run(sys.argv[1], sys.argv[2:]))

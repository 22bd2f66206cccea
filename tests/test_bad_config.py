"""Bad configuration files, through the real `bess-gateway` command in a subprocess.

For each mistake, both `run --config` and `check-config`: a non-zero exit, stderr naming the key
and saying what to do, and nothing started: no data_dir (so no journal), no connection to the
PCS or the CSMS (real listening sockets that must see no client), nothing left listening.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

EXIT_USAGE = 2
BIN = shutil.which("bess-gateway", path=str(Path(sys.executable).parent)) or "bess-gateway"


@dataclass
class Listeners:
    """Real sockets where the PCS, the CSMS and the metrics server would be."""

    pcs: socket.socket
    csms: socket.socket
    metrics_port: int

    def nobody_connected(self) -> bool:
        for s in (self.pcs, self.csms):
            try:
                conn, _ = s.accept()
            except BlockingIOError:
                continue
            conn.close()
            return False
        return True


def _listen() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    s.setblocking(False)
    return s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    pcs, csms = _listen(), _listen()
    try:
        yield Listeners(pcs, csms, _free_port())
    finally:
        pcs.close()
        csms.close()


def good_config(ls: Listeners) -> dict[str, str]:
    """The valid file, section by section; each case breaks one thing in it."""
    csms_port = ls.csms.getsockname()[1]
    return {
        "gateway": f'[gateway]\ndata_dir = "var"\nmetrics_listen = "127.0.0.1:{ls.metrics_port}"\n',
        "control": "[control]\nperiod_ms = 100\n",
        "pcs": f'[pcs]\nhost = "127.0.0.1"\nport = {ls.pcs.getsockname()[1]}\ntimeout_ms = 300\n',
        "endpoint": (f'[[endpoint]]\nid = "BESS-01"\ncsms_url = "ws://127.0.0.1:{csms_port}/ocpp"\n'
                     f'[[endpoint]]\nid = "BESS-02"\ncsms_url = "ws://127.0.0.1:{csms_port}/ocpp"\n'),
    }


# name -> (section to replace, its new text or None to keep, what stderr must contain)
CASES: dict[str, tuple[str, str, list[str]]] = {
    "unknown key": ("control", "[control]\nperiod_msec = 100\n",
                    ["control.period_msec", "unknown key", 'did you mean "period_ms"']),
    "wrong type": ("control", '[control]\nperiod_ms = "fast"\n',
                   ["control.period_ms", "expected an integer"]),
    "out of range": ("control", "[control]\nperiod_ms = 5000\n",
                     ["control.period_ms", "out of range 10..1000"]),
    "duplicate endpoint id": ("endpoint", '[[endpoint]]\nid = "BESS-01"\ncsms_url = "ws://h/o"\n'
                              '[[endpoint]]\nid = "bess-01"\ncsms_url = "ws://h/o"\n',
                              ["endpoint[1] (bess-01).id", "duplicate id", "must be unique"]),
    "bad url": ("endpoint", '[[endpoint]]\nid = "BESS-01"\ncsms_url = "http://csms/ocpp"\n',
                ["endpoint[0] (BESS-01).csms_url", "must start with ws:// or wss://"]),
    "url without host": ("endpoint", '[[endpoint]]\nid = "BESS-01"\ncsms_url = "ws:///ocpp"\n',
                         ["endpoint[0] (BESS-01).csms_url", "has no host"]),
    "toml syntax": ("control", "[control\nperiod_ms = 100\n",
                    ["not valid TOML", "line 4"]),
    "missing env password": ("endpoint", '[[endpoint]]\nid = "BESS-01"\ncsms_url = "ws://h/o"\n'
                             'security_profile = 1\npassword = "env:BESS_TEST_UNSET_PW"\n',
                             ["endpoint[0] (BESS-01).password", "BESS_TEST_UNSET_PW",
                              "export it"]),
    "no endpoint": ("endpoint", "", ["endpoint: no [[endpoint]] table", "add at least one"]),
    "register-map file the core cannot run": (
        "pcs", '[pcs]\nprofile = "map.toml"\n',
        ["pcs.profile", "register-map file", 'use "generic" or "sunspec"']),
}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BESS_TEST_UNSET_PW"}
    return subprocess.run([BIN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_refused_naming_the_key_and_nothing_starts(
        case: str, tmp_path: Path, listeners: Listeners) -> None:
    section, text, expected = CASES[case]
    parts = good_config(listeners)
    parts[section] = text
    (tmp_path / "map.toml").write_text("# a register map\n")
    path = tmp_path / "bad.toml"
    path.write_text("".join(parts.values()))

    for args in (["run", "--config", str(path)], ["check-config", str(path)]):
        done = run(*args, cwd=tmp_path)
        assert done.returncode == EXIT_USAGE, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        for needle in expected:
            assert needle in done.stderr, (args, needle, done.stderr)
        assert str(path) in done.stderr or "bad.toml" in done.stderr  # which file
        assert done.stdout == ""
    assert not (tmp_path / "var").exists()  # no data_dir, so no journal and no logs
    assert listeners.nobody_connected()
    with socket.socket() as s:  # the metrics port was never taken (and is free now)
        s.bind(("127.0.0.1", listeners.metrics_port))


def test_missing_file_and_folder(tmp_path: Path) -> None:
    for target, needle in ((tmp_path / "nope.toml", "no such file"),
                           (tmp_path, "is a folder")):
        for args in (["run", "--config", str(target)], ["check-config", str(target)]):
            done = run(*args, cwd=tmp_path)
            assert done.returncode == EXIT_USAGE
            assert needle in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_good_file_passes_check_config(tmp_path: Path, listeners: Listeners) -> None:
    """The baseline the cases break: valid as it stands (so each case fails for its mistake)."""
    path = tmp_path / "good.toml"
    path.write_text("".join(good_config(listeners).values()))
    done = run("check-config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("OK: 2 endpoints")
    assert not (tmp_path / "var").exists()

"""The README's promises: its test command is the one CI runs, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_gives_exactly_two_setup_commands() -> None:
    cmds = _commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("bess-gateway demo")
    assert cmds[1].endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


def test_readme_register_map_matches_the_simulator_map() -> None:
    import tomllib

    regs = tomllib.loads(
        (ROOT / "python/bess_gateway/sim/registers/generic.toml").read_text())
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (\d+)(?:-\d+)? \|", text, flags=re.M)
    listed = {int(r) for r in rows}
    table = regs.get("register") or regs.get("registers")
    addresses = {int(r["address"]) for r in table}
    assert listed == addresses

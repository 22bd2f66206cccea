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


def test_readme_config_example_is_valid(monkeypatch) -> None:
    from bess_gateway.config import parse_config

    text = (ROOT / "README.md").read_text()
    (example,) = re.findall(r"```toml\n(.+?)\n```", text, flags=re.S)
    import tomllib

    monkeypatch.setenv("BESS01_PASSWORD", "correct horse")
    cfg = parse_config(tomllib.loads(example), base_dir=ROOT, require_endpoints=True)
    assert [e.id for e in cfg.endpoints] == ["BESS-01"]


def test_every_relative_link_in_readme_and_docs_resolves() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken

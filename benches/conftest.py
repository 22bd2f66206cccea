"""Collect `bench_*.py` here (the repo's pytest config only collects `test_*.py`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """One process, whatever pyproject's addopts say: the test suite runs on pytest-xdist
    workers (``-n``), and pytest-benchmark switches itself off (a warning, no numbers, no
    --benchmark-compare-fail) in a parallel run. Runs before xdist's own hook, which starts the
    workers only when ``numprocesses`` is set (this conftest is loaded early, as the one of
    the paths on the command line)."""
    config.option.numprocesses = 0


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    # A file named on the command line is already collected by pytest itself.
    if parent.session.isinitpath(file_path):
        return None
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None

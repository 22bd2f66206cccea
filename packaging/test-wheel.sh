#!/usr/bin/env bash
# Build the release wheel and the sdist, install the wheel into a fresh venv (no source tree on
# the path), import it and run the demo; then build and install from the sdist the way
# `pip install .` does for a user (needs only cargo). Run by .ci/run; takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# maturin in a venv of its own: the project's venv gets it only inside pip's build isolation.
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q 'maturin>=1.9.4,<2'
"$work/tools/bin/maturin" build --release --out "$work/dist"
"$work/tools/bin/maturin" sdist --out "$work/dist"
ls -l "$work/dist"
wheel=$(ls "$work"/dist/*.whl)
case "$wheel" in *-cp311-abi3-*) ;; *) echo "not an abi3 wheel: $wheel"; exit 1 ;; esac
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$wheel"
cd "$work"
./venv/bin/python -c 'import bess_gateway._core, bess_gateway.ops.metrics; print("import ok")'
python3 - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for needed in ("bess_gateway/ops/status_page.html", "bess_gateway/sim/registers/generic.toml",
               "bess_gateway/sim/registers/sunspec.toml"):
    assert needed in names, f"{needed} missing from the wheel"
print("wheel contents ok")
PY
# 12 s: with 5 s the demo ends before its charge sessions move energy and exits 1.
./venv/bin/bess-gateway demo --duration 12 --endpoints 4
# The sdist built as pip builds one (PEP 517, maturin in build isolation), from a copy unpacked
# by hand for one reason: cargo's target directory is the tree's, so the third-party crates
# compiled for the wheel above are reused (as a user's warm cargo cache would be; ~40 s less),
# while the project's own crates compile again from the sdist's files: unpacked with the current
# time (--touch), they are newer than anything built from the tree.
mkdir "$work/sdist-src"
tar -xzf "$work"/dist/*.tar.gz -C "$work/sdist-src" --touch
python3 -m venv "$work/venv-sdist"
CARGO_TARGET_DIR="$repo/target" "$work/venv-sdist/bin/pip" install -q "$work"/sdist-src/*/
./venv-sdist/bin/python -c 'import bess_gateway._core; print("sdist install ok")'

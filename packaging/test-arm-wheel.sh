#!/usr/bin/env bash
# The aarch64 wheel, built and run on this x86_64 machine with Debian's packages alone:
#   1. cross-build it with Debian's rustc-web/cargo-web and its aarch64 standard library, linked by
#      gcc-aarch64-linux-gnu against Debian 11's glibc 2.31, so the wheel is manylinux_2_31 (Debian
#      11+, Ubuntu 20.04+) rather than 2_34; the machine's rustup toolchain stays the default
#      everywhere else;
#   2. check it is what an ARM controller needs: abi3, an aarch64 ELF inside, and a manylinux tag
#      no lower than the newest glibc symbol the extension needs and no higher than 2_31;
#   3. install it with its dependencies (PyPI's aarch64 wheels) into a venv of an aarch64 CPython
#      taken from Debian's arm64 packages and run by qemu-aarch64-static, import it and run the
#      demo until "demo OK";
#   4. run the load benchmark's periodic path (MeterValues only) on the emulated gateway and on
#      the x86 one and print CPU per message of each: a rough guide for sizing, not asserted.
# Run by .ci/run; 3.5-5 minutes on 2 shared cores. Installs its Debian packages itself (root, once).
# Everything else lives in $BESS_ARM_CACHE (default target/arm64-check); delete it to start clean.
# The x86 side of step 4 is the interpreter in $BESS_X86_PYTHON (default .venv/bin/python, the
# README's set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${BESS_ARM_CACHE:-$repo/target/arm64-check}
x86_python=${BESS_X86_PYTHON:-$repo/.venv/bin/python}
export PIP_DISABLE_PIP_VERSION_CHECK=1
mkdir -p "$cache"

begin=$SECONDS
last=$SECONDS
declare -a laps=()
lap() {  # lap "what just finished": prints and keeps how long it took
    laps+=("$(printf '%4ss  %s' "$((SECONDS - last))" "$1")")
    printf '[arm] %s: %ss\n' "$1" "$((SECONDS - last))"
    last=$SECONDS
}
die() { printf 'test-arm-wheel: %s\n' "$*" >&2; exit 1; }

# Fail now rather than after the build: step 4 needs an x86 gateway to compare with.
"$x86_python" -c 'import bess_gateway._core' 2>/dev/null || die "no x86 bess_gateway at" \
    "$x86_python: run the README's set-up commands (python3 -m venv .venv && ...) first, or" \
    "point BESS_X86_PYTHON at an interpreter that has it installed"

# --- Debian packages -------------------------------------------------------------------------
# rustc-web/cargo-web: Debian's newer Rust (1.85+ in bookworm; PyO3 0.29 needs 1.83), the only one
# with an aarch64 standard library packaged (libstd-rust-web-dev:arm64). They install
# /usr/bin/cargo and /usr/bin/rustc, which stay behind rustup's ~/.cargo/bin on PATH.
# libc6-dev-arm64-cross: crti.o and libc for the linker. binutils-aarch64-linux-gnu: objdump -T.
packages=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
          binutils-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if ((${#missing[@]})); then
    [ "$(id -u)" = 0 ] || die "needs root to install: ${missing[*]} (or install them first)"
    # arm64 packages (the std library, and the CPython below) come from the same mirror.
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    # Lock timeout: other jobs on a shared machine may be using apt right now.
    apt-get -o DPkg::Lock::Timeout=600 update -q
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
fi
rust_version=$(/usr/bin/rustc --version | awk '{print $2}')
printf '%s\n1.83.0\n' "$rust_version" | sort -V -C -r ||
    die "Debian's rustc is $rust_version; PyO3 0.29 needs 1.83+: apt-get install -t" \
        "bookworm-security rustc-web cargo-web libstd-rust-web-dev:arm64"
lap "Debian packages (rustc $rust_version)"

# --- glibc to link against -------------------------------------------------------------------
# Linked against bookworm's libc (libc6-dev-arm64-cross, 2.36) the extension needs GLIBC_2.34
# (pthread_* moved into libc.so.6 in 2.34) and the wheel is manylinux_2_34: no Debian 11,
# Ubuntu 20.04 or Raspberry Pi OS 11 controller could install it. Debian 11's arm64 libc6-dev
# (glibc 2.31, still on Debian's main archive) as the linker's sysroot brings that down to 2.31.
# It is fetched from the mirror this machine's apt already uses, with a private apt
# configuration, so the machine's sources and lists stay untouched.
glibc_suite=${BESS_ARM_GLIBC_SUITE:-bullseye}
system_mirror() {
    # The first non-security Debian archive in the machine's sources (deb822 or one-line form).
    # grep exits non-zero where a form is absent: not an error here (set -e, pipefail).
    { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true
      grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
          awk '{print $2}' || true
    } | { grep -v security || true; } | head -n1
}
mirror=${BESS_ARM_DEBIAN_MIRROR:-$(system_mirror)}
[ -n "$mirror" ] || die "no Debian archive in /etc/apt/sources*; set BESS_ARM_DEBIAN_MIRROR"
sysroot=$cache/sysroot-$glibc_suite
if [ ! -e "$sysroot/usr/lib/aarch64-linux-gnu/libc.so" ]; then
    aptdir=$cache/apt-$glibc_suite
    rm -rf "$aptdir" "$sysroot" && mkdir -p "$aptdir/lists/partial" "$aptdir/archives/partial"
    echo "deb $mirror $glibc_suite main" >"$aptdir/sources.list"
    # DEP-11 off: the AppStream metadata apt.conf.d asks for is 4 MB nobody reads here.
    cat >"$aptdir/apt.conf" <<END
Dir::Etc::SourceList "$aptdir/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "$aptdir/lists";
Dir::State::status "/dev/null";
Dir::Cache "$aptdir";
APT::Architecture "arm64";
APT::Architectures { "arm64"; };
APT::Sandbox::User "root";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled "false";
Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled "false";
END
    { APT_CONFIG=$aptdir/apt.conf apt-get update -q &&
      (cd "$aptdir/archives" &&
       APT_CONFIG=$aptdir/apt.conf apt-get download -q libc6 libc6-dev libgcc-s1)
    } || die "could not fetch $glibc_suite's arm64 libc6-dev from $mirror; if $glibc_suite has" \
        "moved to Debian's archive of old releases, set BESS_ARM_DEBIAN_MIRROR to a mirror that has it"
    for deb in "$aptdir"/archives/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
fi
lap "$glibc_suite glibc sysroot for the linker"

# --- 1. cross-build --------------------------------------------------------------------------
# Debian's cargo and rustc go first on PATH only here, through a directory of links (putting
# /usr/bin first would also swap python3 and friends); RUSTC so cargo cannot pick rustup's.
# A target directory of its own: no rebuilds of the main target/ when the compilers alternate.
mkdir -p "$cache/debian-rust"
ln -sf /usr/bin/cargo /usr/bin/rustc /usr/bin/rustdoc "$cache/debian-rust/"
# The linker: the cross gcc with the old glibc first. --sysroot alone is not enough, as Debian's
# cross gcc searches /usr/aarch64-linux-gnu/lib (bookworm's libc) before the sysroot; -B and -L
# put the sysroot's crt files and libraries ahead of it. A wrapper rather than RUSTFLAGS, which
# a RUSTFLAGS in the environment would silently replace.
cat >"$cache/debian-rust/aarch64-linker" <<END
#!/bin/sh
exec aarch64-linux-gnu-gcc --sysroot="$sysroot" -B"$sysroot/usr/lib/aarch64-linux-gnu/" \\
    -L"$sysroot/usr/lib/aarch64-linux-gnu" -L"$sysroot/lib/aarch64-linux-gnu" "\$@"
END
chmod +x "$cache/debian-rust/aarch64-linker"
[ -x "$cache/tools/bin/maturin" ] || {
    python3 -m venv "$cache/tools"
    "$cache/tools/bin/pip" install -q 'maturin>=1.9.4,<2'
}
rm -rf "$cache/dist"
env PATH="$cache/debian-rust:$PATH" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
    CARGO_TARGET_DIR="$cache/cargo-target" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$cache/debian-rust/aarch64-linker" \
    "$cache/tools/bin/maturin" build --release --target aarch64-unknown-linux-gnu \
    --out "$cache/dist"
wheel=$(ls "$cache"/dist/*.whl)
lap "cross-build the aarch64 wheel"

# --- 2. what kind of wheel -------------------------------------------------------------------
# The tag says what pip will accept; the ELF header and the versioned glibc symbols say what
# the extension really is and needs. A tag below the glibc the .so needs would install on a
# controller and then fail to import there.
rm -rf "$cache/unpacked" && mkdir -p "$cache/unpacked"
python3 -m zipfile -e "$wheel" "$cache/unpacked"
so=$(ls "$cache"/unpacked/bess_gateway/_core*.so)
glibc_needed=$(aarch64-linux-gnu-objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' |
               sort -V | tail -1)
python3 - "$wheel" "$so" "$glibc_needed" <<'PY'
import re, struct, sys
from pathlib import Path
wheel, so, glibc_needed = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
m = re.search(r"-(cp3\d+)-abi3-(manylinux_(\d+)_(\d+)_aarch64)\.whl$", wheel)
if not m:
    sys.exit(f"{Path(wheel).name}: not a cp3x-abi3-manylinux_X_Y_aarch64 wheel; check pyo3's "
             "abi3 feature in rust/bindings/Cargo.toml and maturin's --target")
head = so.read_bytes()[:20]
# ELF: magic, EI_CLASS 2 = 64-bit, EI_DATA 1 = little endian; e_machine 183 = EM_AARCH64
machine = struct.unpack_from("<H", head, 18)[0]
if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1 or machine != 183:
    sys.exit(f"{so.name}: not a 64-bit little-endian aarch64 ELF (e_machine {machine})")
tag_glibc = (int(m[3]), int(m[4]))
need = tuple(int(x) for x in glibc_needed.split("."))
if need > tag_glibc:
    sys.exit(f"{m[2]} but the extension needs glibc {glibc_needed}: the tag is too low")
if tag_glibc > (2, 31):
    sys.exit(f"{m[2]}: Debian 11 / Ubuntu 20.04 controllers (glibc 2.31) cannot install it; was "
             "it linked against the old glibc sysroot (the aarch64-linker wrapper)?")
print(f"wheel ok: {Path(wheel).name}: {m[1]}-abi3, {so.name} is an aarch64 ELF, needs glibc "
      f"{glibc_needed}, tag {m[2]} (glibc {tag_glibc[0]}.{tag_glibc[1]}+ on the controller)")
PY
# And on Debian 11's own loader and libc (the sysroot), in ldd mode under qemu: it names every
# symbol version the libc lacks ("version `GLIBC_2.34' not found"), as a controller would.
ldd_out=$(qemu-aarch64-static -L "$sysroot" "$sysroot/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1" \
          --list "$so" 2>&1)
if grep -q 'not found' <<<"$ldd_out"; then
    printf '%s\n' "$ldd_out"
    die "$(basename "$so") does not load with $glibc_suite's glibc; see the missing versions above"
fi
echo "loads with $glibc_suite's glibc $(basename "$sysroot"/lib/aarch64-linux-gnu/libc-*.so .so)"
lap "check tag, ELF machine and glibc"

# --- 3. an aarch64 CPython from Debian, run by qemu ---------------------------------------------
# apt refuses python3.X:arm64 next to the amd64 one, so its packages are only unpacked into a
# root directory; qemu-aarch64-static -L ROOT finds the loader and libraries there. The Python
# version is Debian's default python3 for arm64 (3.11 in bookworm), so wheels match a controller
# running this release. The library list is bookworm's; on another release adjust it to what
# `apt-cache depends python3.X:arm64 libpython3.X-stdlib:arm64` names.
py=$(apt-cache show --no-all-versions python3:arm64 |
     sed -n 's/^Depends:.*\(python3\.[0-9]*\) .*/\1/p')
[ -n "$py" ] ||
    die "no python3:arm64 in the apt lists: dpkg --add-architecture arm64 && apt-get update"
root=$cache/root-$py
if [ ! -x "$root/usr/bin/$py" ]; then
    rm -rf "$cache/debs" "$root" && mkdir -p "$cache/debs" "$root"
    arm=(libc6 libgcc-s1 gcc-12-base libstdc++6 zlib1g libbz2-1.0 liblzma5 libexpat1 libffi8
         libssl3 libsqlite3-0 libuuid1 libcrypt1 libdb5.3 libnsl2 libtirpc3 libgssapi-krb5-2
         libk5crypto3 libkrb5-3 libkrb5support0 libkeyutils1 libcom-err2 libncursesw6 libtinfo6
         libreadline8 "lib$py-minimal" "lib$py-stdlib" "$py-minimal" "$py")
    # Sandbox user root: _apt cannot write into this directory, and apt would only warn.
    (cd "$cache/debs" && apt-get -o APT::Sandbox::User=root download -q "${arm[@]/%/:arm64}")
    for deb in "$cache"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
fi
lap "aarch64 $py root from Debian's arm64 packages"

# A fresh venv per run (a rebuilt 0.1.0 wheel would otherwise count as installed already). Its
# bin/python is a wrapper that starts qemu; -0 passes the wrapper's path as argv[0], so CPython
# finds pyvenv.cfg next to it, and pip, console scripts and sys.executable all run emulated.
venv=$cache/venv
rm -rf "$venv"
qemu-aarch64-static -L "$root" "$root/usr/bin/$py" -m venv --without-pip "$venv"
rm "$venv"/bin/python*
cat >"$venv/bin/python" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$root" -0 "\$0" "$root/usr/bin/$py" "\$@"
EOF
chmod +x "$venv/bin/python"
ln -s python "$venv/bin/python3" && ln -s python "$venv/bin/$py"
# pip itself: Debian's ensurepip lives in python3.X-venv and installs setuptools too (45 s under
# qemu); unpacking pip's wheel into site-packages is what installing it does, in a second. The
# native pip fetches it (pure Python).
rm -rf "$cache/pip"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$cache/pip" 'pip>=24'
python3 -m zipfile -e "$cache"/pip/pip-*.whl "$venv/lib/$py/site-packages"
# Wheels only: a controller has no compilers, so every dependency must have an aarch64 wheel on
# PyPI; a missing one fails here, quickly and by name, instead of a build from source under qemu.
"$venv/bin/python" -m pip install -q --only-binary=:all: "$wheel"
lap "emulated venv + pip install of the wheel and its dependencies"

# Outside the source tree, so only the installed wheel can be imported.
(cd "$cache" && "$venv/bin/python" -c '
import platform, bess_gateway._core as core
assert platform.machine() == "aarch64", platform.machine()
print(f"import ok on {platform.machine()}: {core.__file__}")')
lap "import bess_gateway._core under qemu"

# 15 s: short demos end before the charge sessions move energy both ways, and exit 1.
demo_ok=1
(cd "$cache" && "$venv/bin/bess-gateway" demo --duration 15 --endpoints 4) \
    >"$cache/demo.log" 2>&1 || demo_ok=0
tail -12 "$cache/demo.log"
if ((!demo_ok)) || ! grep -qx 'demo OK' "$cache/demo.log"; then
    die "the demo under qemu did not end with 'demo OK'; its output is in $cache/demo.log"
fi
lap "bess-gateway demo under qemu"

# --- 4. CPU per message, emulated aarch64 vs native x86 ------------------------------------------
# The same tester (native) drives both gateways through the periodic MeterValues path; only the
# gateway process differs. Under qemu every aarch64 instruction is translated, so the ratio
# mixes qemu's cost into the gateway's: a rough guide for sizing, not any real ARM core's number.
"$x86_python" - "$venv/bin/python" <<'PY'
import asyncio, sys
sys.path.insert(0, "benches")
import load
n, seconds = 10, 15
x86 = asyncio.run(load.run_one(n, seconds, 1, baseline=False, commands=False))
arm = asyncio.run(load.run_one(n, seconds, 1, baseline=False, commands=False,
                               python=sys.argv[1]))
x86.label, arm.label = "x86_64 native (MeterValues only)", "aarch64 under qemu (MeterValues only)"
print(load.table([x86, arm], {}))
for r in (x86, arm):
    for note in dict.fromkeys(r.notes):
        print(f"note ({r.label}): {note}")
print(f"CPU per message, aarch64 under qemu / x86_64 native: "
      f"{arm.cpu_per_1000 / x86.cpu_per_1000:.1f}x ({arm.cpu_per_1000:.2f} vs "
      f"{x86.cpu_per_1000:.2f} CPU s per 1000 messages, N = {n}, {seconds} s each)")
PY
lap "load benchmark, MeterValues only, N = 10"

printf '\n[arm] step times:\n'
printf '  %s\n' "${laps[@]}"
printf '[arm] total %ss\n' "$((SECONDS - begin))"

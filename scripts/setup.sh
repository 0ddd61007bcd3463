#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root by `make`).
# Installs the Debian packages Corral needs, a private copy of uv, and the
# project's virtual environment from uv.lock. Re-running does nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

# qemu-*: KVM instances; busybox-static, lz4: the test guest; ganeti-os-noop:
# the OS definition tests run unchanged; openvswitch-switch, ovn-*: OVN NICs
# (the virtual cluster runs a chassis per node, userspace datapath).
APT_PACKAGES=(python3 python3-venv python3-dev gcc iproute2 procps sqlite3 util-linux
    qemu-system-x86 qemu-utils busybox-static lz4 ganeti-os-noop iputils-ping
    openvswitch-switch ovn-central ovn-host ethtool)
UV_HOME=${CORRAL_UV_HOME:-/opt/corral-tools/uv}

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$UV_HOME/bin/uv" ]; then
    echo "setup: installing uv into $UV_HOME"
    mkdir -p "$(dirname "$UV_HOME")"
    /usr/bin/python3 -m venv "$UV_HOME"
    "$UV_HOME/bin/pip" install -q uv
fi

export UV_PYTHON=/usr/bin/python3 UV_PYTHON_DOWNLOADS=never
"$UV_HOME/bin/uv" sync --frozen --quiet --compile-bytecode
# Byte-compile Corral itself too: the environment may set PYTHONDONTWRITEBYTECODE,
# and then every CLI call and kvm-ifup would recompile what it imports.
.venv/bin/python -m compileall -q src >/dev/null

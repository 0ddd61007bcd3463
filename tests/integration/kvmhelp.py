"""Helpers of the KVM integration tests: what an admin sees on a one-node TempCluster.

The QEMU processes, run files, host links and console output of a
:class:`TempCluster` running real (TCG) KVM instances, plus two client
protocols an admin would use: QEMU's human monitor and a VNC viewer's
RFB 3.8 authentication.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from corral import testguest
from corral.testguest import DevicesLine
from corral.testing.cluster import TempCluster
from tests.system.kvmtools import hmp, qemu_pids_under

RUN_SUBDIRS = ("pid", "ctrl", "conf", "nic", "chroot")


# --- the CLI ------------------------------------------------------------------------------------


def configure_kvm(c: TempCluster, guest: testguest.GuestImage) -> None:
    """Enable KVM (and fake) with the test guest as the cluster-wide kernel, under TCG."""
    c.run(*guest.enable_kvm_argv(), check=True)


def statuses(c: TempCluster) -> dict[str, str]:
    out = c.run(
        "gnt-instance", "list", "--no-headers", "--separator=|", "-o", "name,status", check=True
    ).stdout
    return dict(line.split("|", 1) for line in out.splitlines())


def wait_status(c: TempCluster, name: str, want: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = statuses(c).get(name)
        if seen == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name}: status {seen!r}, expected {want!r} within {timeout}s")


def info(c: TempCluster, name: str) -> str:
    return c.run("gnt-instance", "info", name, check=True).stdout


def running_pid(c: TempCluster, name: str) -> int:
    """The QEMU pid ``gnt-instance info`` reports (``Running: pid N, …``)."""
    m = re.search(r"Running: pid (\d+)", info(c, name))
    assert m is not None, f"{name}: gnt-instance info shows no running process"
    return int(m.group(1))


def disk_uuids(c: TempCluster, name: str) -> list[str]:
    out = c.run(
        "gnt-instance", "list", "--no-headers", "-o", "disk.uuids", name, check=True
    ).stdout.strip()
    return [u for u in out.split(",") if u and u != "-"]


# --- what the node has ----------------------------------------------------------------------


def run_files(c: TempCluster) -> list[str]:
    """Every file or directory inside the KVM run dirs (``pid/…``, ``chroot/…``)."""
    base = c.paths.hv_run_dir("kvm")
    found: list[str] = []
    for sub in RUN_SUBDIRS:
        d = base / sub
        if d.is_dir():
            found += sorted(f"{sub}/{n}" for n in os.listdir(d))
    return found


def instance_run_files(c: TempCluster, name: str) -> list[str]:
    """The run files of one instance (``pid/<name>``, ``ctrl/<name>.qmp``, ``chroot/<name>`` …)."""
    return [
        f for f in run_files(c) if (n := f.split("/", 1)[1]) == name or n.startswith(name + ".")
    ]


def tree(root: Path) -> set[str]:
    """Relative paths of every file and directory under ``root``."""
    out: set[str] = set()
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        out.update(os.path.join(rel, n) for n in dirs + files)
    return out


def qemu_pids(c: TempCluster, name: str | None = None) -> set[int]:
    return qemu_pids_under(str(c.root), name)


def host_links(kinds: tuple[str, ...] = ("tun", "bridge")) -> set[str]:
    """Interfaces of these kinds in the host's network namespace (``ip -d -j link``)."""
    out = subprocess.run(
        ["ip", "-d", "-j", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return {
        link["ifname"]
        for link in json.loads(out or "[]")
        if link.get("linkinfo", {}).get("info_kind") in kinds
    }


def proc_uids(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uid of a process (``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for pid {pid}")


# --- the guest's serial console ---------------------------------------------------------------


def console_log(c: TempCluster, name: str) -> Path:
    return c.paths.log_dir / "kvm" / f"{name}.console.log"


def log_size(c: TempCluster, name: str) -> int:
    try:
        return console_log(c, name).stat().st_size
    except FileNotFoundError:
        return 0


def console_text(c: TempCluster, name: str, offset: int = 0) -> str:
    try:
        return console_log(c, name).read_bytes()[offset:].decode(errors="replace")
    except FileNotFoundError:
        return ""


def devices_lines(text: str) -> list[DevicesLine]:
    out = []
    for raw in text.splitlines():
        line = testguest.parse_line(raw)
        if isinstance(line, DevicesLine):
            out.append(line)
    return out


def wait_devices(c: TempCluster, name: str, offset: int = 0, timeout: float = 90) -> DevicesLine:
    """The guest's first device report written to the console log after ``offset``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = devices_lines(console_text(c, name, offset))
        if lines:
            return lines[0]
        time.sleep(0.1)
    raise AssertionError(
        f"{name}: no DEVICES line in {timeout}s; console:\n{console_text(c, name, offset)[-2000:]}"
    )


def wait_console_text(
    c: TempCluster, name: str, text: str, offset: int = 0, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in console_text(c, name, offset):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name}: {text!r} never appeared on the console")


def read_until(
    stream: IO[bytes] | None, pattern: re.Pattern[str], timeout: float
) -> tuple[re.Match[str] | None, str]:
    """Read a pipe (a ``Popen`` stdout) until ``pattern`` matches; returns what was read."""
    assert stream is not None
    fd = stream.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            m = pattern.search(buf.decode(errors="replace"))
            if m is not None:
                return m, buf.decode(errors="replace")
    return None, buf.decode(errors="replace")


# --- QEMU's human monitor -----------------------------------------------------------------------


def monitor(c: TempCluster, name: str) -> Path:
    return c.paths.hv_run_dir("kvm") / "ctrl" / f"{name}.monitor"


def monitor_command(c: TempCluster, name: str, command: str) -> str:
    """Run an HMP command; returns its output (without HMP's line-editing echo)."""
    return hmp(monitor(c, name), command).rsplit("\x1b[K", 1)[-1]


def wait_serial_client(c: TempCluster, name: str, timeout: float = 30) -> None:
    """Until a client (the console) is connected to the serial socket (HMP ``info chardev``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = monitor_command(c, name, "info chardev")
        serial = [ln for ln in out.splitlines() if ln.startswith("serial0:")]
        if serial and "disconnected:" not in serial[0]:
            return
        time.sleep(0.2)
    raise AssertionError(f"{name}: no console client attached to the serial socket")


# --- a VNC viewer's authentication (RFB 3.8, VNC authentication) --------------------------------


def _des_encrypt(key: bytes, data: bytes) -> bytes:
    # DES is 3DES with the same 8-byte key three times; cryptography >= 43 keeps it in
    # "decrepit", older releases in the main algorithms module.
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    except ImportError:  # pragma: no cover - cryptography < 43
        from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def vnc_key(password: str) -> bytes:
    """VNC's DES key: the password's first 8 bytes, NUL-padded, each byte bit-reversed."""
    raw = password.encode()[:8].ljust(8, b"\0")
    return bytes(int(f"{b:08b}"[::-1], 2) for b in raw)


@dataclass(frozen=True)
class VncHandshake:
    """What the server said during one RFB 3.8 authentication."""

    version: bytes
    security_types: list[int]
    result: int  # SecurityResult: 0 OK, else failed (-1: VNC authentication not offered)
    reason: str = ""


def vnc_authenticate(host: str, port: int, password: str, timeout: float = 10) -> VncHandshake:
    """Do the RFB 3.8 handshake with VNC authentication (type 2); SecurityResult 0 is OK."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        f = s.makefile("rb")

        def read(n: int) -> bytes:
            data = f.read(n)
            if len(data) != n:
                raise AssertionError(f"VNC server closed the connection ({data!r})")
            return data

        version = read(12)
        s.sendall(b"RFB 003.008\n")
        (count,) = read(1)
        if count == 0:  # the server refuses; a reason string follows
            (n,) = struct.unpack(">I", read(4))
            raise AssertionError(f"VNC server refused: {read(n)!r}")
        types = list(read(count))
        if 2 not in types:
            return VncHandshake(version, types, -1, "VNC authentication not offered")
        s.sendall(bytes([2]))
        challenge = read(16)
        s.sendall(_des_encrypt(vnc_key(password), challenge))
        (result,) = struct.unpack(">I", read(4))
        reason = ""
        if result != 0:
            (n,) = struct.unpack(">I", read(4))
            reason = read(n).decode(errors="replace")
        return VncHandshake(version, types, result, reason)

"""The test guest boots in raw QEMU (TCG) and reports what a VM host needs to know.

Needs root (network namespace, taps) and QEMU. Each test boots one guest:
1 vCPU, 128 MiB, TCG, one virtio NIC on a tap inside a namespace the test
creates, one virtio disk (raw, from qemu-img) with a serial. Addresses are
from 203.0.113.0/24 and 198.51.100.0/24 only.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import pytest
from qemu.qmp import QMPClient

from corral import testguest
from corral.testguest import AddrLine, ConsoleLine, DevicesLine, GuestImage, PowerOffLine

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and taps"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU not installed"),
    pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed"),
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

MAC0 = "52:54:00:c0:ff:01"
MAC1 = "52:54:00:c0:ff:02"
GUEST_IP0, HOST_IP0 = "203.0.113.10", "203.0.113.1"
GUEST_IP1, HOST_IP1 = "198.51.100.10", "198.51.100.1"
BOOT_TIMEOUT = 90.0  # TCG on a shared 2-core machine; a healthy boot takes ~3 s
DISK_BYTES = 8 << 20

L = TypeVar("L", bound=ConsoleLine)


@pytest.fixture(scope="module")
def image() -> GuestImage:
    # the default cache (or $CORRAL_TESTGUEST_CACHE): built once, then offline
    return testguest.build()


@dataclass
class Net:
    ns: str
    taps: tuple[str, str]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def net() -> Iterator[Net]:
    """A namespace with two configured taps, QEMU attaches to them by name."""
    tag = f"cx{secrets.token_hex(2)}"
    ns = f"{tag}tg"
    taps = (f"{tag}t0", f"{tag}t1")
    _ip("netns", "add", ns)
    try:
        for tap, addr in zip(taps, (HOST_IP0, HOST_IP1), strict=True):
            _ip("-n", ns, "tuntap", "add", "dev", tap, "mode", "tap")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", tap)
            _ip("-n", ns, "link", "set", tap, "up")
        yield Net(ns, taps)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


class Console:
    """Lines of the guest's serial console (QEMU's stdout), read by a thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._eof = False
        self._pos = 0
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            with self._cond:
                self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def reports(self) -> list[ConsoleLine]:
        """Every report so far, in order."""
        with self._cond:
            parsed = [testguest.parse_line(text) for _t, text in self.lines]
        return [p for p in parsed if p is not None]

    def wait_for(
        self, kind: type[L], pred: Callable[[L], bool] = lambda _l: True, timeout: float = 30.0
    ) -> tuple[float, L]:
        """The next report of ``kind`` matching ``pred`` (after earlier waits)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._pos < len(self.lines):
                    t, text = self.lines[self._pos]
                    self._pos += 1
                    parsed = testguest.parse_line(text)
                    if isinstance(parsed, kind) and pred(parsed):
                        return t, parsed
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    seen = "\n".join(text for _t, text in self.lines[-30:])
                    raise AssertionError(f"no {kind.__name__} line; console:\n{seen}")
                self._cond.wait(left)


@dataclass
class Guest:
    proc: subprocess.Popen[bytes]
    console: Console
    qmp_path: Path
    started: float
    disk: Path  # raw image of DISK_BYTES behind drive "d0", serial "cxdisk0"


@pytest.fixture
def boot(image: GuestImage, net: Net, tmp_path: Path) -> Iterator[Callable[[str], Guest]]:
    """Start QEMU in the namespace; kill it (by PID) at the end if still running."""
    procs: list[subprocess.Popen[bytes]] = []
    sockdir = Path(tempfile.mkdtemp(prefix="cxtg-"))  # short: unix socket paths are limited
    disk = tmp_path / "disk.raw"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "raw", str(disk), str(DISK_BYTES)],
        check=True,
        capture_output=True,
    )

    def start(append: str) -> Guest:
        qmp_path = sockdir / f"qmp{len(procs)}.sock"
        argv = [
            "ip", "netns", "exec", net.ns,  # ip execs QEMU: the PID is QEMU's
            "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-nodefaults",
            "-m", "128", "-smp", "1", "-display", "none", "-serial", "stdio",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
            "-netdev", f"tap,id=hn0,ifname={net.taps[0]},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=hn0,mac={MAC0},addr=0x3",
            "-drive", f"file={disk},format=raw,if=none,id=d0",
            "-device", "virtio-blk-pci,drive=d0,serial=cxdisk0,addr=0x4",
        ]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None
        return Guest(proc, Console(proc.stdout), qmp_path, started, disk)

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(sockdir, ignore_errors=True)


def _ping(net: Net, addr: str) -> None:
    # busybox's ping (from busybox-static): the host may have no other
    r = subprocess.run(
        ["ip", "netns", "exec", net.ns, "busybox", "ping", "-c", "1", "-w", "10", addr],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, f"no answer from {addr}: {r.stdout}{r.stderr}"


async def _qmp(path: Path, *commands: tuple[str, dict[str, object]]) -> None:
    qmp = QMPClient("corral-test")
    await qmp.connect(str(path))
    try:
        for cmd, args in commands:
            await qmp.execute(cmd, args)
    finally:
        await qmp.disconnect()


def test_guest_reports_devices_answers_ping_and_powers_off(
    boot: Callable[[str], Guest], net: Net
) -> None:
    mac_key = MAC0.replace(":", "")
    guest = boot(f"console=ttyS0 quiet corral.ip.{mac_key}={GUEST_IP0}/24")

    t, first = guest.console.wait_for(DevicesLine, timeout=BOOT_TIMEOUT)
    print(f"first DEVICES line {t - guest.started:.2f} s after QEMU started")
    assert [(n.ifname, n.mac) for n in first.net] == [("eth0", MAC0)]
    assert [(b.name, b.serial) for b in first.blk] == [("vda", "cxdisk0")]
    # the address was applied before the report: its ADDR line came first
    reports = guest.console.reports()
    assert reports.index(AddrLine("eth0", MAC0, f"{GUEST_IP0}/24")) < reports.index(first)

    _ping(net, GUEST_IP0)

    asyncio.run(_qmp(guest.qmp_path, ("system_powerdown", {})))
    guest.console.wait_for(PowerOffLine, timeout=60)
    assert guest.proc.wait(timeout=60) == 0


def test_hotplugged_nic_is_reported_addressed_and_unplugged(
    boot: Callable[[str], Guest], net: Net
) -> None:
    guest = boot(testguest.kernel_cmdline({MAC0: f"{GUEST_IP0}/24", MAC1: f"{GUEST_IP1}/24"}))
    guest.console.wait_for(DevicesLine, timeout=BOOT_TIMEOUT)

    plug_start = time.monotonic()
    asyncio.run(
        _qmp(
            guest.qmp_path,
            (
                "netdev_add",
                {
                    "type": "tap",
                    "id": "hn1",
                    "ifname": net.taps[1],
                    "script": "no",
                    "downscript": "no",
                },
            ),
            (
                "device_add",
                {
                    "driver": "virtio-net-pci",
                    "id": "nic1",
                    "netdev": "hn1",
                    "mac": MAC1,
                    "bus": "pci.0",
                    "addr": "0x6",
                },
            ),
        )
    )
    t, plugged = guest.console.wait_for(DevicesLine, lambda d: MAC1 in d.macs, timeout=60)
    print(f"hot-added NIC reported {t - plug_start:.2f} s after netdev_add")
    assert plugged.macs == {MAC0, MAC1}
    assert [b.serial for b in plugged.blk] == ["cxdisk0"]
    reports = guest.console.reports()
    assert reports.index(AddrLine("eth1", MAC1, f"{GUEST_IP1}/24")) < reports.index(plugged)
    _ping(net, GUEST_IP1)

    asyncio.run(_qmp(guest.qmp_path, ("device_del", {"id": "nic1"})))
    _t, unplugged = guest.console.wait_for(DevicesLine, lambda d: MAC1 not in d.macs, timeout=60)
    assert unplugged.macs == {MAC0}


def _disks(line: DevicesLine) -> list[tuple[str, str, int | None]]:
    return [(b.name, b.serial, b.size_bytes) for b in line.blk]


def test_online_disk_grow_is_reported(boot: Callable[[str], Guest]) -> None:
    guest = boot("console=ttyS0 quiet")
    _t, first = guest.console.wait_for(DevicesLine, timeout=BOOT_TIMEOUT)
    assert _disks(first) == [("vda", "cxdisk0", DISK_BYTES)]

    grown = 3 * DISK_BYTES
    resize_start = time.monotonic()
    asyncio.run(_qmp(guest.qmp_path, ("block_resize", {"device": "d0", "size": grown})))
    assert guest.disk.stat().st_size == grown
    t, after = guest.console.wait_for(DevicesLine, lambda d: _disks(d) != _disks(first), timeout=60)
    print(f"grown disk reported {t - resize_start:.2f} s after block_resize")
    assert _disks(after) == [("vda", "cxdisk0", grown)]
    assert after.blk[0].sectors == grown // 512
    assert after.net == first.net


@pytest.mark.skipif(not os.environ.get("CORRAL_TESTGUEST_BENCH"), reason="measurement only")
def test_measure_boot_to_first_report(boot: Callable[[str], Guest]) -> None:
    """``CORRAL_TESTGUEST_BENCH=5 pytest -s …``: QEMU start → first DEVICES line."""
    times = []
    for _ in range(int(os.environ.get("CORRAL_TESTGUEST_BENCH", "5"))):
        guest = boot("console=ttyS0 quiet")
        t, _first = guest.console.wait_for(DevicesLine, timeout=BOOT_TIMEOUT)
        times.append(t - guest.started)
        guest.proc.kill()
        guest.proc.wait(timeout=30)
    print(f"first DEVICES line: median {statistics.median(times):.2f} s of {sorted(times)}")

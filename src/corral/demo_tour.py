"""The demo's machinery: its steps, their timings, and the tour that runs them.

Layer: demo (imports the virtual cluster only). :mod:`corral.demo` narrates
the cluster part and :mod:`corral.demo_vm` the VM part; both print every
command through a :class:`Tour` so the reader sees what an admin would type.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from corral import vcluster as vcl

GUEST = "web1"
GUEST_NODE = "node1"  # where web1 starts; the live migration takes it to TARGET_NODE
TARGET_NODE = "node2"
GUEST_MAC = "aa:00:00:de:00:10"
GUEST_IP = "203.0.113.10"
HOT_MAC = "aa:00:00:de:00:11"  # the hot-added NIC; the guest gives it HOT_IP
HOT_IP = "203.0.113.11"
HOT_DISK = "32M"
GUEST_ADDRESSES = ((GUEST_MAC, GUEST_IP), (HOT_MAC, HOT_IP))
CLIENT_IP = "203.0.113.200"  # a namespace on node2's br0 standing in for a client
CLIENT_NODE = "node2"
# 1000 MiB/s: a 128 MiB idle guest moves in a fraction of a second (the
# default 32 MiB/s takes seconds); 50 ms is the pause QEMU may aim for.
MIGRATION_PARAMS = "migration_bandwidth=1000,migration_downtime=50"
BOOT_TIMEOUT = 180.0  # TCG on a loaded 2-core machine: generous


@dataclass(frozen=True)
class Step:
    """One command of the tour, typed on ``on`` (``"master"`` or a node name)."""

    argv: tuple[str, ...]
    title: str | None = None
    on: str = "master"
    expect_fail: bool = False
    show: Callable[[str], str] | None = None  # shortens stdout for the reader
    timeout: float = 120.0


def step(
    *argv: str,
    title: str | None = None,
    on: str = "master",
    expect_fail: bool = False,
    show: Callable[[str], str] | None = None,
    timeout: float = 120.0,
) -> Step:
    return Step(argv, title, on, expect_fail, show, timeout)


@dataclass(frozen=True)
class Timing:
    """One row of the closing summary."""

    step: str
    seconds: float | None  # None: the step failed
    detail: str = ""


class Tour:
    """Runs steps on the virtual cluster, prints them, counts the surprises."""

    def __init__(self, vc: vcl.VCluster) -> None:
        self.vc = vc
        self.master = "node1"
        self.failures = 0
        self.guest_node = GUEST_NODE  # where web1 runs now
        self.timings: list[Timing] = []
        self.last_took = 0.0  # seconds, of the last step run
        self.last_output = ""

    def time(self, step: str, seconds: float | None, detail: str = "") -> None:
        self.timings.append(Timing(step, seconds, detail))

    @contextlib.contextmanager
    def timed(self, step: str, detail: str = "") -> Iterator[None]:
        """Times a whole part of the tour; it failed if any of its steps did."""
        failures, started = self.failures, time.monotonic()
        try:
            yield
        finally:
            ok = self.failures == failures
            self.time(step, time.monotonic() - started if ok else None, detail)

    def section(self, title: str) -> None:
        print(f"\n# {title}")

    def note(self, text: str) -> None:
        print(f"   {text}")

    def fail(self, text: str) -> None:
        self.failures += 1
        print(f"!! {text}")

    def host(self, argv: Sequence[str]) -> None:
        print("[host]$ " + " ".join(shlex.quote(a) for a in argv))

    def run(self, s: Step) -> bool:
        node = self.vc.node(self.master if s.on == "master" else s.on)
        if s.title:
            self.section(s.title)
        print(f"[{node.name}]$ " + " ".join(shlex.quote(a) for a in s.argv))
        started = time.monotonic()
        try:
            r = vcl.run_in(node, list(s.argv), timeout=s.timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"no answer in {s.timeout:.0f}s")
            return False
        took = time.monotonic() - started
        self.last_took, self.last_output = took, r.stdout + r.stderr
        print(s.show(r.stdout) if s.show else r.stdout, end="")
        print(r.stderr, end="")
        if (r.returncode != 0) != s.expect_fail:
            self.fail(f"unexpected exit status {r.returncode}")
            return False
        print(f"   (exit {r.returncode}, {took * 1000:.0f} ms)")
        return True

    def run_all(self, steps: Sequence[Step]) -> None:
        for s in steps:
            self.run(s)

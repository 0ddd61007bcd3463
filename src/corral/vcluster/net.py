"""Network namespaces, veths and bridges for the virtual cluster (pyroute2).

Layer: testing support (imports nothing from corral). Every call names the
namespace it acts in; nothing here touches the host's own namespace except
to create and remove named namespaces (bind mounts under ``/run/netns``).
Work that must happen *inside* a namespace without a subprocess (sysctls, TCP
probes) runs on a fresh thread that ``setns(2)``-es into it: on Linux a
namespace switch applies to the calling thread only, and the thread ends
afterwards, so the rest of the process stays where it was.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute, netns  # type: ignore[import-untyped]

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
IFNAMSIZ = 15  # usable characters of a Linux interface name

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_setns = _libc.setns
_setns.argtypes = [ctypes.c_int, ctypes.c_int]
_setns.restype = ctypes.c_int

# Every namespace starts quiet: no IPv6 link-local/SLAAC addresses of its own
# (only the 2001:db8::/32 addresses someone adds on purpose), no router
# solicitations, no duplicate-address-detection delay.
QUIET_SYSCTLS = {
    "net/ipv6/conf/default/addr_gen_mode": "1",
    "net/ipv6/conf/all/addr_gen_mode": "1",
    "net/ipv6/conf/default/accept_ra": "0",
    "net/ipv6/conf/all/accept_ra": "0",
    "net/ipv6/conf/default/autoconf": "0",
    "net/ipv6/conf/all/autoconf": "0",
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/router_solicitations": "0",
}


class NetError(Exception):
    """A namespace or link operation failed."""


# --- namespaces -------------------------------------------------------------------


def ns_path(ns: str) -> str:
    return os.path.join(NETNS_DIR, ns)


def list_ns(prefix: str = "") -> list[str]:
    """Named network namespaces whose name starts with ``prefix``."""
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


def ns_exists(ns: str) -> bool:
    return os.path.exists(ns_path(ns))


def create_ns(ns: str) -> None:
    """Create namespace ``ns`` (fails if it exists), with ``lo`` up and quiet IPv6."""
    if ns_exists(ns):
        raise NetError(f"network namespace {ns} already exists")
    netns.create(ns)
    set_sysctls(ns, QUIET_SYSCTLS)
    with ipr(ns) as r:
        r.link("set", index=_index(r, "lo"), state="up")


def remove_ns(ns: str) -> None:
    """Remove namespace ``ns`` (its links go with it once no process holds it)."""
    if ns_exists(ns):
        netns.remove(ns)


def ns_inode(ns: str) -> tuple[int, int] | None:
    """(device, inode) identifying the namespace, to match ``/proc/<pid>/ns/net``."""
    try:
        st = os.stat(ns_path(ns))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_ns(ns: str) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    ident = ns_inode(ns)
    out: list[int] = []
    if ident is None:
        return out
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ident:
            out.append(int(entry))
    return out


@contextmanager
def ipr(ns: str) -> Iterator[Any]:
    """An ``IPRoute`` bound to an existing namespace (never creates one)."""
    if not ns_exists(ns):
        raise NetError(f"network namespace {ns} does not exist")
    r = IPRoute(netns=ns, flags=0)
    try:
        yield r
    finally:
        r.close()


# --- running code inside a namespace ------------------------------------------------


def enter_ns(ns: str) -> None:
    """Move the *calling thread* into ``ns``."""
    fd = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _preexec(fd: int) -> Callable[[], None]:
    def _enter() -> None:
        if _setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")

    return _enter


def popen_in(ns: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` whose child ``setns(2)``-es into ``ns`` before ``exec``.

    The namespace file is opened in the parent; the child only makes the
    system call (the descriptor is close-on-exec, the program never sees it).
    """
    fd = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return subprocess.Popen(argv, preexec_fn=_preexec(fd), **kwargs)
    finally:
        os.close(fd)


def run_in_ns(ns: str, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` inside ``ns`` (same keyword arguments)."""
    fd = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        return subprocess.run(argv, preexec_fn=_preexec(fd), **kwargs)
    finally:
        os.close(fd)


def in_ns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` on a fresh thread inside ``ns``; return its result or raise."""
    box: dict[str, Any] = {}

    def _run() -> None:
        try:
            enter_ns(ns)
            box["result"] = fn()
        except BaseException as err:
            box["error"] = err

    t = threading.Thread(target=_run, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result


def set_sysctls(ns: str, values: dict[str, str]) -> None:
    def _write() -> None:
        for key, val in values.items():
            with open(f"/proc/sys/{key}", "w") as f:
                f.write(val)

    in_ns(ns, _write)


def tcp_connect(ns: str, host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds from inside ``ns``."""

    def _probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return in_ns(ns, _probe)


def wait_tcp(
    ns: str,
    host: str,
    port: int,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Poll until ``host:port`` accepts from inside ``ns``; stop early if not ``alive()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tcp_connect(ns, host, port, timeout=0.5):
            return True
        if not alive():
            return False
        time.sleep(0.05)
    return False


# --- links --------------------------------------------------------------------------


def check_ifname(name: str) -> str:
    if not 0 < len(name) <= IFNAMSIZ or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise NetError(f"bad interface name {name!r} (1-{IFNAMSIZ} of [A-Za-z0-9_.-])")
    return name


def _index(r: Any, ifname: str) -> int:
    found = r.link_lookup(ifname=ifname)
    if not found:
        raise NetError(f"no link {ifname} in {r.status.get('netns')}")
    idx: int = found[0]
    return idx


def add_bridge(ns: str, name: str, mac: str | None = None) -> None:
    """A Linux bridge in ``ns``, up, with a pinned MAC (else it follows its ports)."""
    check_ifname(name)
    with ipr(ns) as r:
        spec: dict[str, Any] = {"ifname": name, "kind": "bridge"}
        if mac:
            spec["address"] = mac
        r.link("add", **spec)
        # No STP, no forwarding delay: ports forward as soon as they are up.
        r.link("set", index=_index(r, name), kind="bridge", br_forward_delay=0, br_stp_state=0)
        r.link("set", index=_index(r, name), state="up")


def add_veth(ns: str, name: str, peer_ns: str, peer_name: str) -> None:
    """A veth pair: ``name`` in ``ns``, ``peer_name`` created directly in ``peer_ns``.

    Neither end ever exists in the host namespace.
    """
    check_ifname(name)
    check_ifname(peer_name)
    if not ns_exists(peer_ns):
        raise NetError(f"network namespace {peer_ns} does not exist")
    with ipr(ns) as r:
        r.link("add", ifname=name, kind="veth", peer={"ifname": peer_name, "net_ns_fd": peer_ns})


def enslave(ns: str, ifname: str, bridge: str) -> None:
    with ipr(ns) as r:
        r.link("set", index=_index(r, ifname), master=_index(r, bridge))


def link_up(ns: str, ifname: str, mac: str | None = None) -> None:
    with ipr(ns) as r:
        if mac:
            r.link("set", index=_index(r, ifname), address=mac)
        r.link("set", index=_index(r, ifname), state="up")


def add_address(ns: str, ifname: str, address: str, prefixlen: int) -> None:
    with ipr(ns) as r:
        r.addr("add", index=_index(r, ifname), address=address, prefixlen=prefixlen)


@dataclass(frozen=True)
class LinkInfo:
    name: str
    kind: str | None
    up: bool
    master: str | None
    mac: str | None


def links(ns: str) -> dict[str, LinkInfo]:
    """The links of ``ns`` by name."""
    with ipr(ns) as r:
        raw = list(r.get_links())
    by_index = {m["index"]: m.get_attr("IFLA_IFNAME") for m in raw}
    out: dict[str, LinkInfo] = {}
    for m in raw:
        name = m.get_attr("IFLA_IFNAME")
        info = m.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        master = m.get_attr("IFLA_MASTER")
        out[name] = LinkInfo(
            name=name,
            kind=kind,
            up=bool(m["flags"] & 1),
            master=by_index.get(master) if master else None,
            mac=m.get_attr("IFLA_ADDRESS"),
        )
    return out


def addresses(ns: str) -> dict[str, list[str]]:
    """``{ifname: ["198.51.100.11/24", ...]}`` for every address in ``ns``."""
    with ipr(ns) as r:
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in r.get_links()}
        out: dict[str, list[str]] = {}
        for a in r.get_addr():
            name = names.get(a["index"], str(a["index"]))
            out.setdefault(name, []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    return out

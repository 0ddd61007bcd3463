"""Bring a described machine to life, and take down what it leaves behind.

Layer: driver execution. The node daemon opens every disk image and tap
itself, runs ``kvm-ifup``, writes the runtime file, then execs QEMU with
the descriptors (``-add-fd`` / ``-netdev tap,fd=``), so QEMU never opens a
host path and can run unprivileged. Any failure undoes exactly what was
done: descriptors closed (the taps vanish with them), routes removed by
``kvm-ifdown``, runtime files deleted, a half-started QEMU killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import dataclass, field

import msgspec

from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm import cmdline, runtime
from corral.hypervisor.kvm.files import KvmFiles
from corral.hypervisor.kvm.model import Machine
from corral.network import nicenv, nicfiles, runner
from corral.network.tap import open_tap
from corral.params import NicParams
from corral.rpc.types import NicSpec

log = logging.getLogger(__name__)

QEMU_START_TIMEOUT = 60.0


def nic_spec(nic: runtime.RuntimeNic, index: int) -> NicSpec:
    """A runtime-file NIC as the kvm-ifup environment builder wants it."""
    return NicSpec(
        uuid=nic.uuid,
        name=nic.name,
        index=index,
        mac=nic.mac,
        ip=nic.ip,
        nicparams=msgspec.convert(nic.nicparams, NicParams, strict=False),
        network=dict(nic.netinfo or {}),
    )


@dataclass
class Opened:
    """Descriptors opened for one launch; closed on failure (the taps vanish with them).

    Network setup needs no list of its own: the runtime file and each tap's
    file are written before ``kvm-ifup`` runs, so :func:`deconfigure` finds
    every NIC that may have been (even partly) configured.
    """

    fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def open_disks(rt: runtime.KvmRuntime, opened: Opened) -> list[cmdline.DiskFd]:
    out: list[cmdline.DiskFd] = []
    for i, bd in enumerate(rt.disks):
        flags = os.O_RDONLY if bd.disk.mode == "ro" else os.O_RDWR
        try:
            fd = os.open(bd.link, flags | os.O_CLOEXEC)
        except OSError as err:
            raise HypervisorError(
                f"cannot open disk {i} ({bd.link}): {err.strerror}", ECode.ENVIRON
            ) from None
        opened.fds.append(fd)
        out.append(cmdline.DiskFd(fd=fd, fdset=i))
    return out


async def open_nics(
    files: KvmFiles,
    rt: runtime.KvmRuntime,
    m: Machine,
    tags: list[str],
    opened: Opened,
    defer_modes: tuple[str, ...] = (),
) -> list[cmdline.NicFds]:
    """Open a tap per NIC and run kvm-ifup, except for NICs in ``defer_modes``
    (a migration target wires routed NICs only once the VM runs there)."""
    out: list[cmdline.NicFds] = []
    for i, nic in enumerate(rt.nics):
        tap = open_tap(vnet_hdr=m.hv.vnet_hdr)
        opened.fds.append(tap.fd)
        vhost_fd = None
        if m.hv.vhost_net and m.nics[i].hvinfo.driver == "virtio-net-pci":
            try:
                vhost_fd = os.open("/dev/vhost-net", os.O_RDWR | os.O_CLOEXEC)
            except OSError as err:
                raise HypervisorError(
                    f"vhost_net is on but /dev/vhost-net cannot be opened: {err.strerror}",
                    ECode.ENVIRON,
                ) from None
            opened.fds.append(vhost_fd)
        # Recorded before kvm-ifup: a half-done ifup is undone by kvm-ifdown too.
        nicfiles.write_tap(files.nic_dir, m.name, nic.uuid, i, tap.name)
        if nic.nicparams.get("mode") not in defer_modes:
            env = nicenv.ifup_env(m.name, tags, nic_spec(nic, i), tap.name)
            await runner.run_ifup(None, env, tap.name)
        out.append(cmdline.NicFds(fd=tap.fd, vnet_hdr=tap.vnet_hdr, vhost_fd=vhost_fd))
    return out


def _marker(files: KvmFiles, name: str) -> bytes:
    """What only this instance's QEMU has in its argv: its QMP socket path."""
    return str(files.ctrl_dir / f"{name}.qmp").encode()


def pid_of(files: KvmFiles, name: str) -> int | None:
    """The pid of this instance's QEMU, if it runs (checked against its argv)."""
    try:
        pid = int(files.pidfile(name).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    # The pid file could be stale and the pid reused: the QMP socket path is ours.
    if not any(_marker(files, name) in a for a in argv):
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return None
    except (OSError, IndexError):
        return None
    return pid


def _reused(files: KvmFiles, name: str, pid: int) -> bool:
    """Whether ``pid`` now names another program than this instance's QEMU."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read()
    except OSError:
        return True
    # Empty: a main thread that exited while the others still end (its argv
    # went with its memory). Not reaped yet, so still ours.
    return bool(argv) and _marker(files, name) not in argv


async def wait_exit(
    files: KvmFiles, name: str, pid: int, timeout: float, send: signal.Signals | None = None
) -> bool:
    """Whether QEMU ``pid`` of ``name`` is gone within ``timeout`` seconds.

    ``send``: signal it first, through the same pidfd, so a pid reused after
    an exit is never hit.
    """
    loop = asyncio.get_running_loop()
    # A pidfd turns readable once every thread has ended, after the kernel
    # freed the guest's memory and closed QEMU's files (its taps): gone for
    # good. The main thread's zombie shows ~20 ms earlier, taps still open.
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        try:
            if _reused(files, name, pid):  # opened after our QEMU was reaped
                return True
            if send is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, send)
            exited: asyncio.Future[None] = loop.create_future()

            def on_exit() -> None:
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, on_exit)
            try:
                await asyncio.wait_for(exited, timeout)
                return True
            except TimeoutError:
                return pid_of(files, name) != pid
            finally:
                loop.remove_reader(pidfd)
        finally:
            os.close(pidfd)
    if send is not None and pid_of(files, name) == pid:  # no pidfds: by pid, checked
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, send)
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if pid_of(files, name) != pid:
            return True
        await asyncio.sleep(0.02)
    return pid_of(files, name) != pid


async def kill(files: KvmFiles, name: str, pid: int) -> None:
    """SIGTERM, then SIGKILL: for a QEMU that does not answer on QMP."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
        if await wait_exit(files, name, pid, wait, send=sig):
            return
    raise HypervisorError(f"QEMU of {name} (pid {pid}) does not die", ECode.FAULT)


async def exec_qemu(
    argv: list[str], pass_fds: list[int], timeout: float = QEMU_START_TIMEOUT
) -> None:
    """Run QEMU with ``-daemonize``: returns once the machine is set up."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            pass_fds=pass_fds,
            start_new_session=True,  # QEMU must outlive the node daemon
        )
    except OSError as err:
        raise HypervisorError(f"cannot execute {argv[0]}: {err.strerror}", ECode.ENVIRON) from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise HypervisorError(f"QEMU did not start within {timeout} s") from None
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()
        raise HypervisorError(
            f"QEMU failed to start (exit {proc.returncode}): {text[-1500:] or 'no output'}",
            ECode.ENVIRON,
        )


@dataclass(frozen=True)
class Unwired:
    """One NIC :func:`deconfigure` ran ``kvm-ifdown`` for."""

    tap: str
    result: runner.ScriptResult


async def deconfigure(
    rt: runtime.KvmRuntime | None, files: KvmFiles, name: str, context: str
) -> list[Unwired]:
    """Run kvm-ifdown for every NIC the runtime file lists (best effort).

    The NIC data comes from the runtime file, the tap from the file named
    after the NIC's UUID; the environment has no ``TAGS`` (the ifdown design).
    Returns what ran, failures included (they are logged, never raised).
    """
    done: list[Unwired] = []
    if rt is None:
        return done
    for i, nic in enumerate(rt.nics):
        tap = nicfiles.read_tap(files.nic_dir, name, nic.uuid)
        if tap is None:
            continue
        env = nicenv.ifdown_env(name, nic_spec(nic, i), tap)
        done.append(Unwired(tap, await runner.run_ifdown(None, env, tap, context)))
    return done


async def configure_deferred(
    rt: runtime.KvmRuntime, files: KvmFiles, name: str, tags: list[str], modes: tuple[str, ...]
) -> None:
    """Run the kvm-ifup that :func:`open_nics` deferred for NICs in ``modes``."""
    for i, nic in enumerate(rt.nics):
        if nic.nicparams.get("mode") not in modes:
            continue
        tap = nicfiles.read_tap(files.nic_dir, name, nic.uuid)
        if tap is None:
            raise HypervisorError(f"no tap recorded for NIC {i} of {name}", ECode.STATE)
        await runner.run_ifup(None, nicenv.ifup_env(name, tags, nic_spec(nic, i), tap), tap)

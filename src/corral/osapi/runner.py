"""Running OS scripts: ``create``, ``import``, ``export``, ``rename``, ``verify``.

Layer: driver (node side; imports ``errors``, ``osapi``, ``rpc.types``).
Scripts run asynchronously in the definition's directory with only the OS
environment, in their own process group (a timeout kills the script and
everything it started). ``create``/``import``/``export``/``rename`` write
their output to a log per run, ``<log_dir>/os/<action>-<os>-<instance>-
<timestamp>.log`` (Ganeti's names: ``add`` for create and reinstall); a
failure raises :class:`~corral.errors.OpExecError` with the last lines of
the log and its path. ``verify`` output comes back in the error itself.

Export streams the disk through the script's stdout into a file and gives
the script a pipe in ``EXP_SIZE_FD`` to announce the size, as Ganeti's
import/export daemon does; import feeds a file to the script's stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from corral.errors import ECode, OpExecError, ParameterError
from corral.osapi import parse
from corral.osapi.env import os_core_env, os_env
from corral.rpc.types import InstanceSpec, OsDefinition

TAIL_LINES = 20
MAX_VERIFY_OUTPUT = 16 * 1024


@dataclass(frozen=True)
class RunOptions:
    """How scripts of one request run on this node."""

    node: str  # this node's name (INSTANCE_PRIMARY_NODE)
    log_dir: Path  # the node's log directory; logs go to <log_dir>/os/
    debug: int = 0
    timeout: float = 3300.0


@dataclass(frozen=True)
class ExportResult:
    log: Path
    size_hint: int | None  # bytes the script announced on EXP_SIZE_FD
    size: int  # bytes written


def _safe(part: str) -> str:
    return part.replace("/", "_") or "_"


def new_log(log_dir: Path, action: str, os_name: str, instance: str) -> Path:
    """Create an empty, unique log file for one script run."""
    d = log_dir / "os"
    d.mkdir(parents=True, exist_ok=True)
    base = f"{action}-{_safe(os_name)}-{_safe(instance)}-{time.strftime('%Y-%m-%d_%H_%M_%S')}"
    for n in range(1000):
        path = d / (f"{base}-{n}.log" if n else f"{base}.log")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        except FileExistsError:
            continue
        return path
    raise OpExecError(f"cannot create a log file for {base} in {d}")


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log (empty if unreadable)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def _reason(status: int | None, timeout: float) -> str:
    if status is None:
        return f"timed out after {timeout:.0f}s"
    if status < 0:
        return f"killed by signal {-status}"
    return f"exited with status {status}"


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> int | None:
    """The exit status, or None after a timeout (the whole process group is killed)."""
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        return None
    except asyncio.CancelledError:
        _kill_group(proc)
        raise


async def _run_logged(
    what: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    log: Path,
    timeout: float,
    stdin: IO[bytes] | int = asyncio.subprocess.DEVNULL,
    stdout: IO[bytes] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> None:
    """Run a script with stderr (and stdout unless redirected) to ``log``; raise on failure."""
    with open(log, "ab") as logf:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=stdout if stdout is not None else logf,
                stderr=logf,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        except OSError as err:
            logf.write(f"cannot run {argv[0]}: {err}\n".encode())
            raise OpExecError(
                f"OS {what} script {argv[0]} cannot run: {err} (log: {log})",
                ECode.ENVIRON,
                log=str(log),
            ) from err
        status = await _wait(proc, timeout)
    if status != 0:
        raise OpExecError(
            f"OS {what} script failed ({_reason(status, timeout)}), last lines of the log "
            f"{log}:\n{tail(log)}",
            ECode.ENVIRON,
            log=str(log),
        )


def _script(defn: OsDefinition, name: str) -> str:
    return str(Path(defn.path) / name)


def _check_disks(inst: InstanceSpec) -> None:
    for d in inst.disks:
        if d.path and not os.path.exists(d.path):
            raise OpExecError(
                f"disk {d.index} of {inst.name} is missing on the node: {d.path}", ECode.STATE
            )


def _disk_path(inst: InstanceSpec, index: int) -> str:
    if not 0 <= index < len(inst.disks):
        raise ParameterError(
            "disk_index", f"instance {inst.name} has no disk {index} ({len(inst.disks)} disks)"
        )
    path = inst.disks[index].path
    if not path:
        raise OpExecError(f"disk {index} of {inst.name} has no path on this node", ECode.STATE)
    return path


async def create(
    defn: OsDefinition,
    inst: InstanceSpec,
    osparams: Mapping[str, str],
    opts: RunOptions,
    reinstall: bool = False,
) -> Path:
    """Run ``create`` (``INSTANCE_REINSTALL=1`` on reinstall); return the log's path."""
    _check_disks(inst)
    env = os_env(inst, defn, osparams, primary_node=opts.node, debug=opts.debug)
    if reinstall:
        env["INSTANCE_REINSTALL"] = "1"
    log = new_log(opts.log_dir, "add", inst.os, inst.name)
    argv = [_script(defn, parse.SCRIPT_CREATE)]
    await _run_logged("create", argv, env, defn.path, log, opts.timeout)
    return log


async def rename(
    defn: OsDefinition,
    inst: InstanceSpec,
    old_name: str,
    osparams: Mapping[str, str],
    opts: RunOptions,
) -> Path:
    """Run ``rename`` with ``OLD_INSTANCE_NAME`` (``inst`` has the new name)."""
    _check_disks(inst)
    env = os_env(inst, defn, osparams, primary_node=opts.node, debug=opts.debug)
    env["OLD_INSTANCE_NAME"] = old_name
    log = new_log(opts.log_dir, "rename", inst.os, f"{old_name}-{inst.name}")
    argv = [_script(defn, parse.SCRIPT_RENAME)]
    await _run_logged("rename", argv, env, defn.path, log, opts.timeout)
    return log


def _read_size(fd: int) -> int | None:
    """What the script wrote to ``EXP_SIZE_FD`` (bytes and a newline), if anything usable."""
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return None
    try:
        size = int(data.split(b"\n", 1)[0].strip())
    except ValueError:
        return None
    return size if size >= 0 else None


async def export_disk(
    defn: OsDefinition,
    inst: InstanceSpec,
    index: int,
    dest: Path,
    osparams: Mapping[str, str],
    opts: RunOptions,
) -> ExportResult:
    """Stream disk ``index`` through ``export`` into ``dest`` (replaced only on success)."""
    device = _disk_path(inst, index)
    _check_disks(inst)
    env = os_env(inst, defn, osparams, primary_node=opts.node, debug=opts.debug)
    env.update({"EXPORT_DEVICE": device, "EXPORT_DISK_PATH": device, "EXPORT_INDEX": str(index)})
    log = new_log(opts.log_dir, "export", inst.os, f"{inst.name}-disk{index}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial")
    rfd, wfd = os.pipe()
    env["EXP_SIZE_FD"] = str(wfd)
    try:
        with open(partial, "wb") as out:
            try:
                await _run_logged(
                    "export",
                    [_script(defn, parse.SCRIPT_EXPORT)],
                    env,
                    defn.path,
                    log,
                    opts.timeout,
                    stdout=out,
                    pass_fds=(wfd,),
                )
            finally:
                os.close(wfd)
                wfd = -1
            size_hint = _read_size(rfd)
            out.flush()
            os.fsync(out.fileno())
        size = partial.stat().st_size
        os.replace(partial, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    finally:
        os.close(rfd)
        if wfd >= 0:
            os.close(wfd)
    return ExportResult(log=log, size_hint=size_hint, size=size)


async def import_disk(
    defn: OsDefinition,
    inst: InstanceSpec,
    index: int,
    source: Path,
    osparams: Mapping[str, str],
    opts: RunOptions,
) -> Path:
    """Feed ``source`` to ``import`` on its stdin to restore disk ``index``."""
    device = _disk_path(inst, index)
    _check_disks(inst)
    env = os_env(inst, defn, osparams, primary_node=opts.node, debug=opts.debug)
    env.update({"IMPORT_DEVICE": device, "IMPORT_DISK_PATH": device, "IMPORT_INDEX": str(index)})
    try:
        src = open(source, "rb")  # noqa: SIM115 (closed below, after the script ran)
    except OSError as err:
        raise OpExecError(f"cannot read the image to import {source}: {err}", ECode.NOENT) from err
    log = new_log(opts.log_dir, "import", inst.os, f"{inst.name}-disk{index}")
    with src:
        await _run_logged(
            "import", [_script(defn, parse.SCRIPT_IMPORT)], env, defn.path, log, opts.timeout, src
        )
    return log


async def verify(
    defn: OsDefinition,
    os_name: str,
    osparams: Mapping[str, str],
    checks: list[str],
    debug: int = 0,
    timeout: float = 150.0,
) -> None:
    """Run ``verify <checks…>`` (API 20); a refusal raises ParameterError with its output."""
    env = os_core_env(os_name, defn, osparams, debug)
    argv = [_script(defn, parse.SCRIPT_VERIFY), *checks]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=defn.path,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as err:
        raise OpExecError(f"OS verify script {argv[0]} cannot run: {err}", ECode.ENVIRON) from err
    out: list[bytes] = []

    async def collect() -> int:
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(4096):
            if sum(map(len, out)) < MAX_VERIFY_OUTPUT:
                out.append(chunk)
        return await proc.wait()

    status: int | None
    try:
        status = await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        status = None
    if status == 0:
        return
    text = b"".join(out)[:MAX_VERIFY_OUTPUT].decode("utf-8", "replace")
    said = "; ".join(line.strip() for line in text.splitlines() if line.strip())
    raise ParameterError(
        "osparams",
        f"OS '{defn.name}' refused the parameters: its verify script "
        f"{_reason(status, timeout)}" + (f": {said}" if said else ""),
    )

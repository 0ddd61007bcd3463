"""Run ``kvm-ifup``/``kvm-ifdown`` from noded (asyncio).

Layer: driver (imports ``corral.errors``). The scripts are this package's
console scripts, found next to ``sys.executable`` (the venv's ``bin``) unless
the caller names a directory or a script. They run with the Ganeti
environment from :func:`corral.network.nicenv.ifup_env` (``ifdown_env``)
plus ``CORRAL_ROOT``
(so they find this node's custom scripts), no stdin, and a timeout.

``kvm-ifup`` failing fails the operation (start, hot-add): Ganeti's
"Failed to configure interface …". ``kvm-ifdown`` is best effort (the ifdown
design): its failures are logged and returned, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError, ECode, HypervisorError

log = logging.getLogger(__name__)

OUTPUT_TAIL_CHARS = 2000


@dataclass(frozen=True)
class ScriptResult:
    """How one script run ended."""

    script: str
    exit_code: int | None  # None: killed after the timeout, or could not start
    output: str  # stdout and stderr interleaved, tail only

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        if self.exit_code is None:
            how = "timed out or could not start"
        else:
            how = f"exited with {self.exit_code}"
        return f"{Path(self.script).name} {how}" + (f": {self.output}" if self.output else "")


def script_path(name: str, where: str | Path | None = None) -> Path:
    """``where`` is a script, a directory holding ``name``, or ``None`` (venv bin)."""
    if where is None:
        return Path(sys.executable).parent / name
    p = Path(where)
    return p / name if p.is_dir() else p


def _kill_group(pid: int) -> None:
    # The script runs in its own session (start_new_session), so its process
    # group id is its pid: this reaches the script and whatever it spawned.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return text[-OUTPUT_TAIL_CHARS:]


async def run_script(
    script: Path, args: list[str], env: Mapping[str, str], timeout: float
) -> ScriptResult:
    """Run one script; never raises for the script's own failures."""
    full_env = dict(env)
    if "CORRAL_ROOT" in os.environ:
        full_env.setdefault("CORRAL_ROOT", os.environ["CORRAL_ROOT"])
    try:
        proc = await asyncio.create_subprocess_exec(
            str(script),
            *args,
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # a timeout kills the script and its children
        )
    except OSError as e:
        return ScriptResult(str(script), None, f"cannot run {script}: {e.strerror}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        return ScriptResult(str(script), None, f"killed after {timeout:g}s")
    except asyncio.CancelledError:
        _kill_group(proc.pid)  # asyncio reaps it; don't leave it running
        raise
    return ScriptResult(str(script), proc.returncode, _tail(out))


def _builtin_in_process(env: Mapping[str, str], tap: str, up: bool) -> bool:
    """Wire a bridged NIC without VLAN here, as ``kvm-ifup``/``kvm-ifdown`` would.

    Only when no custom script is installed: then the script would run exactly
    this code (:func:`corral.network.ifup.bridged_fast`), and a process start
    (~40 ms, most of a NIC hot-add's overhead) buys nothing. Custom scripts,
    VLANs and routed NICs always get the script.
    """
    from corral.network import ifup

    full = {**env, "CORRAL_ROOT": env.get("CORRAL_ROOT", os.environ.get("CORRAL_ROOT", "/"))}
    names = ifup.IFUP_CUSTOM if up else ifup.IFDOWN_CUSTOM
    if ifup.custom_script(full, names) is not None:
        return False
    return ifup.bridged_fast(full, up, tap)


_OVS_MODES = ("ovn", "openvswitch")


async def _ovs_in_process(env: Mapping[str, str], tap: str, up: bool, context: str = "") -> bool:
    """The built-in OVS/OVN wiring in noded (no custom script installed).

    As for bridged NICs: the script would run exactly this, but as a new
    process it also pays ~100 ms for importing ovsdbapp and connecting to
    OVSDB; here the connection is cached (plug ~13 ms). In a thread: the
    OVSDB client blocks.
    """
    if env.get("MODE") not in _OVS_MODES:
        return False
    from corral.network import ifup
    from corral.network.nicenv import parse_env
    from corral.network.setup import nic_down, nic_up

    full = {**env, "CORRAL_ROOT": env.get("CORRAL_ROOT", os.environ.get("CORRAL_ROOT", "/"))}
    if ifup.custom_script(full, ifup.IFUP_CUSTOM if up else ifup.IFDOWN_CUSTOM) is not None:
        return False
    nic = parse_env(full)
    if up:
        await asyncio.to_thread(nic_up, nic, full)
    else:
        claimed = ifup.claimed_elsewhere(full, tap)
        await asyncio.to_thread(lambda: nic_down(nic, context, claimed=claimed, env=full))
    return True


async def run_ifup(
    script_dir_or_path: str | Path | None,
    env: Mapping[str, str],
    tap: str,
    timeout: float = 30,
) -> None:
    """Run ``kvm-ifup <tap>``; raise :class:`HypervisorError` if it fails."""
    if script_dir_or_path is None:
        try:
            if _builtin_in_process(env, tap, up=True) or await _ovs_in_process(env, tap, True):
                return
        except CorralError as err:
            raise HypervisorError(
                f"Failed to configure interface {tap}: {err.message}", err.code, tap=tap
            ) from None
    result = await run_script(script_path("kvm-ifup", script_dir_or_path), [tap], env, timeout)
    if not result.ok:
        raise HypervisorError(
            f"Failed to configure interface {tap}: {result.describe()}",
            ECode.ENVIRON,
            tap=tap,
            exit_code=result.exit_code,
        )


async def run_ifdown(
    script_dir_or_path: str | Path | None,
    env: Mapping[str, str],
    tap: str,
    context: str,
    timeout: float = 30,
) -> ScriptResult:
    """Run ``kvm-ifdown <tap> <context>``; failures are logged, never raised.

    ``env`` is :func:`corral.network.nicenv.ifdown_env` (no ``TAGS``);
    ``context`` one of :data:`~corral.network.nicenv.IFDOWN_CONTEXTS` (old
    aliases are passed on under their current name).
    """
    from corral.network.nicenv import IFDOWN_CONTEXT_ALIASES

    context = IFDOWN_CONTEXT_ALIASES.get(context, context)
    if script_dir_or_path is None:
        try:
            if _builtin_in_process(env, tap, up=False) or await _ovs_in_process(
                env, tap, False, context
            ):
                return ScriptResult("(built-in)", 0, "")
        except CorralError as err:  # never fatal: logged, as a failed script is
            log.warning("Failed to deconfigure interface %s (%s): %s", tap, context, err)
            return ScriptResult("(built-in)", 1, str(err))
    result = await run_script(
        script_path("kvm-ifdown", script_dir_or_path), [tap, context], env, timeout
    )
    if not result.ok:
        log.warning("Failed to deconfigure interface %s (%s): %s", tap, context, result.describe())
    return result

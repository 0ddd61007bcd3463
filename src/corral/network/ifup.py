"""The ``kvm-ifup`` and ``kvm-ifdown`` console scripts.

Layer: entry point (imports ``corral.errors``; only when the built-in setup
runs ``corral.network.brioctl`` for bridged NICs without VLAN, else
``corral.network.setup`` and pyroute2). Usage::

    kvm-ifup [--no-custom] <tap>
    kvm-ifdown [--no-custom] <tap> [shutdown|migrate-source|migrate-failed|hot-remove]

(``migrate-success``, the old name of ``migrate-source``, is still accepted
and passed on as ``migrate-source``.)

The environment is Ganeti's (see :mod:`corral.network.nicenv`); ``INTERFACE``
and ``MODE`` must be set. If the admin installed an executable
``<conf_dir>/kvm-ifup-custom`` (or Ganeti's legacy name ``kvm-vif-bridge``),
resp. ``kvm-ifdown-custom``, it is ``exec``-ed with the same arguments and
environment and *replaces* the built-in setup, as in Ganeti. ``--no-custom``
skips that lookup, so a custom script can do its extra work and then chain
to the built-in wiring (``exec kvm-ifup --no-custom "$@"``).

The built-in ``kvm-ifdown`` only touches a tap that still exists if no other
NIC's tap file on this node names it (:func:`claimed_elsewhere`): the kernel
reuses ``tapN`` names, and ``kvm-ifdown`` runs after QEMU exited, when the
name may already serve another instance.

Exit status 0 on success, 1 with a message on stderr otherwise. Startup time
matters (one run per NIC on every instance start and NIC hot-plug): keep
imports lazy. The common case, a bridged NIC without VLAN, imports nothing but
the standard library, ``corral.errors`` and ``corral.network.brioctl``: the
import of pyroute2 alone took several times longer than all the rest, and
``dataclasses``/``pathlib`` (``corral.paths``, ``nicenv``) a third of it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from corral.errors import CorralError

IFUP_CUSTOM = ("kvm-ifup-custom", "kvm-vif-bridge")
IFDOWN_CUSTOM = ("kvm-ifdown-custom",)


class _UsageError(Exception):
    pass


def conf_dir(env: Mapping[str, str]) -> str:
    """``Paths.from_env().conf_dir`` without importing ``corral.paths`` (start-up time)."""
    return os.path.join(env.get("CORRAL_ROOT", "/"), "etc/corral")


def custom_script(env: Mapping[str, str], names: Sequence[str]) -> str | None:
    """The admin's executable replacement of the built-in script, if installed."""
    conf = conf_dir(env)
    for name in names:
        path = os.path.join(conf, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def nic_dir(env: Mapping[str, str]) -> str:
    """``KvmFiles(Paths.from_env()).nic_dir`` without importing either (start-up time)."""
    return os.path.join(env.get("CORRAL_ROOT", "/"), "run/corral/kvm-hypervisor/nic")


def claimed_elsewhere(env: Mapping[str, str], tap: str) -> bool:
    """Whether a NIC other than this one (``INSTANCE``, ``INTERFACE_UUID``) records ``tap``.

    Then the tap name was reused by the kernel for that NIC after ours went
    away, and ``kvm-ifdown`` must leave the tap (its bridge port, routes,
    rules, sysctls) alone. The new owner's record is written before its
    ``kvm-ifup`` runs, so a tap being wired is already claimed.
    """
    from corral.network.nicfiles import owners

    me = (env.get("INSTANCE", ""), env.get("INTERFACE_UUID", ""))
    return any((o.instance, o.uuid) != me for o in owners(nic_dir(env), tap))


def bridged_fast(env: Mapping[str, str], up: bool, tap: str) -> bool:
    """Do what ``nic_up``/``nic_down`` would for a bridged NIC (up: without VLAN).

    Returns False when the NIC is not such a NIC (or has no ``LINK``: the full
    path then refuses it with Ganeti's message). Down takes the tap off the
    bridge (:func:`corral.network.brioctl.release`) when it is still a port of
    ``LINK`` and not :func:`claimed_elsewhere`; usually QEMU has exited and
    the tap is gone with its port, and there is nothing to do. VLANs need no
    undoing: they are the port's and go with it; VIDs added to uplinks stay
    (other ports may use them).
    """
    if env.get("MODE") != "bridged" or not env.get("LINK"):
        return False
    if up:
        if env.get("VLAN"):
            return False
        from corral.network.brioctl import enslave

        enslave(tap, env["LINK"])
        return True
    from corral.network.brioctl import link_info, release

    if link_info(tap) is not None and not claimed_elsewhere(env, tap):
        release(tap, env["LINK"])
    return True


def _parse(prog: str, argv: Sequence[str], max_pos: int) -> tuple[bool, list[str]]:
    no_custom = False
    pos: list[str] = []
    for arg in argv:
        if arg == "--no-custom":
            no_custom = True
        elif arg.startswith("-"):
            raise _UsageError(f"unknown option {arg}")
        else:
            pos.append(arg)
    if not 1 <= len(pos) <= max_pos:
        usage = "<tap>" if max_pos == 1 else "<tap> [context]"
        raise _UsageError(f"usage: {prog} [--no-custom] {usage}")
    return no_custom, pos


def _check_env(tap: str) -> None:
    # Ganeti's net-common 'check', plus a guard against a caller whose argv
    # and environment disagree about the tap.
    interface = os.environ.get("INTERFACE", "")
    if not interface:
        raise _UsageError("No network interface specified (INTERFACE is not set)")
    if not os.environ.get("MODE"):
        raise _UsageError("MODE not specified")
    if interface != tap:
        raise _UsageError(f"INTERFACE={interface} but the tap argument is {tap}")


def _run(prog: str, argv: Sequence[str], up: bool) -> int:
    try:
        no_custom, pos = _parse(prog, argv, 1 if up else 2)
        tap = pos[0]
        context = pos[1] if len(pos) > 1 else ""
        _check_env(tap)
        if not up and context:
            from corral.network.nicenv import ifdown_context

            try:
                context = ifdown_context(context)
            except CorralError as e:
                raise _UsageError(e.message) from None
            pos[1] = context
        if not no_custom:
            script = custom_script(os.environ, IFUP_CUSTOM if up else IFDOWN_CUSTOM)
            if script is not None:
                sys.stdout.flush()
                sys.stderr.flush()
                os.execv(script, [script, *pos])  # the environment is inherited as is
        if bridged_fast(os.environ, up, tap):
            return 0
        from corral.network.nicenv import parse_env
        from corral.network.setup import nic_down, nic_up

        nic = parse_env(os.environ)
        if up:
            result = nic_up(nic)
        else:
            result = nic_down(nic, context, claimed=claimed_elsewhere(os.environ, tap))
        for warning in result.warnings:
            print(f"{prog}: warning: {warning}", file=sys.stderr)
        return 0
    except (_UsageError, CorralError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. exec of a custom script that is not a valid executable
        print(f"{prog}: {e}", file=sys.stderr)
        return 1


def ifup_main(argv: Sequence[str] | None = None) -> int:
    """``kvm-ifup [--no-custom] <tap>``."""
    return _run("kvm-ifup", sys.argv[1:] if argv is None else argv, up=True)


def ifdown_main(argv: Sequence[str] | None = None) -> int:
    """``kvm-ifdown [--no-custom] <tap> [context]``."""
    return _run("kvm-ifdown", sys.argv[1:] if argv is None else argv, up=False)

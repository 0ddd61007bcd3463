"""Stopping and inspecting virtual clusters: ``down``, ``down_all``, ``status``.

Layer: testing support. Split from :mod:`corral.vcluster.cluster` (which builds
and starts them) along the one seam every caller sees: ``down`` works from a
VCluster, a base directory or a prefix alone, even after a crash left only
half a state file, and stops only processes it can prove are ours (recorded
PIDs with matching start time, or pid files inside our nodes' namespaces).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.paths import Paths
from corral.vcluster import net
from corral.vcluster.model import (
    DEFAULT_BASE,
    PREFIX_RE,
    PROC_FILE,
    SHARED_DIR_SUFFIX,
    STATE_FILE,
    VCluster,
    VClusterError,
    normalize_prefix,
)
from corral.vcluster.proc import ProcRecord, cmdline, is_ours, reap, stop


def _node_procs_file(node_root: Path) -> Path:
    return node_root / PROC_FILE


def _read_node_procs(node_root: Path) -> list[ProcRecord]:
    try:
        data = json.loads(_node_procs_file(node_root).read_text())
        return [ProcRecord.from_dict(d) for d in data]
    except (OSError, ValueError, KeyError, TypeError):
        return []


# --- down / status --------------------------------------------------------------------


def _infer_prefix(base: Path) -> str | None:
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        m = re.fullmatch(rf"([a-z][a-z0-9]{{1,8}}-)(n\d+|{SHARED_DIR_SUFFIX})", entry.name)
        if m and entry.is_dir():
            return m.group(1)
    return None


def _resolve_target(
    target: VCluster | str | Path,
) -> tuple[str | None, Path | None, VCluster | None]:
    """(prefix, base, state) for a VCluster, a base directory or a prefix."""
    if isinstance(target, VCluster):
        return target.prefix, target.base, target
    text = str(target)
    if isinstance(target, Path) or os.sep in text:
        base = Path(text).absolute()
        try:
            state = VCluster.load(base)
            return state.prefix, base, state
        except VClusterError:
            return _infer_prefix(base), base, None
    prefix = normalize_prefix(text)
    base = DEFAULT_BASE / prefix
    try:
        return prefix, base, VCluster.load(base)
    except VClusterError:
        return prefix, base if base.exists() else None, None


@dataclass
class DownReport:
    prefix: str | None
    base: str | None
    stopped: list[int] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)


def _pidfile_records(node_root: Path) -> list[ProcRecord]:
    """Daemons that detached themselves inside our node's namespace and left a
    pid file in its root (e.g. ``corral-masterd`` started without ``-f``)."""
    out: list[ProcRecord] = []
    paths = Paths(node_root)
    ns = node_root.name  # a node's root directory is named like its namespace
    ident = net.ns_inode(ns)
    daemons = [(paths.masterd_pidfile, "corral-masterd"), (paths.noded_pidfile, "corral-noded")]
    kvm_pids = paths.hv_run_dir("kvm") / "pid"
    qemus = sorted(kvm_pids.iterdir()) if kvm_pids.is_dir() else []
    for pidfile, prog in [*daemons, *((q, "qemu") for q in qemus)]:
        try:
            pid = int(pidfile.read_text().split()[0])
            st = os.stat(f"/proc/{pid}/ns/net")
        except (OSError, ValueError, IndexError):
            continue
        if ident is None or (st.st_dev, st.st_ino) != ident:
            continue
        cl = cmdline(pid) or []
        if prog == "qemu":
            # Instances' QEMUs (daemonized by the node daemon): ours if their
            # argv names a control socket under this node's root.
            if any(str(node_root) in a and ".qmp," in a for a in cl):
                out.append(ProcRecord(pid=pid, argv=cl, ns=ns, role=prog))
        elif any(os.path.basename(a) == prog or a == f"corral.daemons.{prog[7:]}" for a in cl):
            out.append(ProcRecord(pid=pid, argv=cl, ns=ns, role=prog))
    return out


def down(target: VCluster | str | Path, *, prefix: str | None = None) -> DownReport:
    """Remove a virtual cluster: its processes, namespaces (and so links), directories.

    ``target`` is a :class:`VCluster`, a base directory, or a prefix. Works from
    a stale, partial or missing state file: every namespace named with the
    prefix goes, and every recorded process (state file or per-node record)
    that is still the process we started is stopped.
    """
    p, base, state = _resolve_target(target)
    if prefix is not None:
        p = normalize_prefix(prefix)
    report = DownReport(prefix=p, base=str(base) if base else None)
    if p is None and state is None:
        raise VClusterError(f"cannot tell which virtual cluster {target} is (give the prefix)")

    # 1. processes. Node roots are only ever directories named like a node
    # namespace of this prefix: nothing else is read from or removed.
    candidates = [Path(d) for d in state.dirs] if state is not None else []
    if base is not None and base.is_dir():
        candidates += list(base.iterdir())
    node_re = re.escape(p or (state.prefix if state else "")) + r"n\d+"
    node_roots = [d for d in dict.fromkeys(candidates) if re.fullmatch(node_re, d.name)]
    records: dict[int, ProcRecord] = {}
    for rec in state.processes if state else []:
        records[rec.pid] = rec
    for root in node_roots:
        for rec in _read_node_procs(root):
            records.setdefault(rec.pid, rec)
        for rec in _pidfile_records(root):
            records.setdefault(rec.pid, rec)
    report.stopped = stop(list(records.values()))
    for pid in records:
        reap(pid)

    # 2. namespaces (their links go with them)
    names = list(state.namespaces) if state else []
    if p is not None:
        names += net.list_ns(p)
    for ns in reversed(list(dict.fromkeys(names))):
        if not net.ns_exists(ns):
            continue
        others = [pid for pid in net.pids_in_ns(ns) if pid not in records]
        if others:
            report.leftovers.append(f"{ns}: processes not started by vcluster: {others}")
        net.remove_ns(ns)
        report.namespaces.append(ns)

    # 3. directories: node roots named with our prefix (rmtree removes the links
    # to the shared storage, not what they point to), the shared storage, then
    # the state file and base
    shared = re.escape(p or (state.prefix if state else "")) + SHARED_DIR_SUFFIX
    shared_dirs = [d for d in dict.fromkeys(candidates) if re.fullmatch(shared, d.name)]
    for root in node_roots + shared_dirs:
        if root.is_dir() and not root.is_symlink():
            shutil.rmtree(root, ignore_errors=True)
            report.dirs.append(str(root))
    if base is not None and base.is_dir():
        for name in (STATE_FILE,):
            with contextlib.suppress(FileNotFoundError):
                (base / name).unlink()
        for stray in base.glob(f".{STATE_FILE}.*"):
            with contextlib.suppress(OSError):
                stray.unlink()
        with contextlib.suppress(OSError):
            base.rmdir()  # only if empty: a user-given --root keeps its other files
            report.dirs.append(str(base))
    return report


def down_all() -> list[DownReport]:
    """``down`` for every virtual cluster under :data:`DEFAULT_BASE`."""
    out = []
    if DEFAULT_BASE.is_dir():
        for entry in sorted(DEFAULT_BASE.iterdir()):
            if entry.is_dir() and PREFIX_RE.fullmatch(entry.name):
                out.append(down(entry, prefix=entry.name))
    return out


def status(target: VCluster | str | Path) -> dict[str, Any]:
    """What exists of a virtual cluster: nodes, namespaces, daemons."""
    _p, _base, state = _resolve_target(target)
    if state is None:
        raise VClusterError(f"no state file for virtual cluster {target}")
    nodes = []
    for node in state.nodes:
        recs = [r for r in _read_node_procs(Path(node.root)) if r.role == "noded"]
        pid = node.noded_pid or (recs[-1].pid if recs else None)
        rec = next((r for r in recs if r.pid == pid), None)
        nodes.append(
            {
                "name": node.name,
                "ns": node.ns,
                "ns_exists": net.ns_exists(node.ns),
                "mgmt_ip": node.mgmt_ip,
                "root": node.root,
                "noded_pid": pid,
                "noded_running": bool(rec and is_ours(rec)),
            }
        )
    return {
        "prefix": state.prefix,
        "base": str(state.base),
        "complete": state.complete,
        "switch_ns": state.switch_ns,
        "switch_exists": net.ns_exists(state.switch_ns),
        "namespaces": net.list_ns(state.prefix),
        "shared_storage": str(state.shared_dir),
        "nodes": nodes,
    }


def list_clusters() -> list[Path]:
    """Base directories under :data:`DEFAULT_BASE` that hold a state file."""
    if not DEFAULT_BASE.is_dir():
        return []
    return sorted(e for e in DEFAULT_BASE.iterdir() if (e / STATE_FILE).exists())

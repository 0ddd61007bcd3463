"""``corral-watcher``: one pass of the cluster's watchdog (Ganeti's ``ganeti-watcher``).

Layer: client (imports ``client``, ``errors``, ``paths``; talks to the master
over LUXI like the ``gnt-*`` commands). Meant for cron or a systemd timer
every few minutes on every node; where no master daemon listens it says so
and exits 0, so the same line works on every node. One pass:

1. cleans up after dead instances on every online node (an
   ``OP_CLUSTER_CLEANUP_STALE`` job): ``kvm-ifdown`` cannot be relied on (a
   QEMU killed, a node that died), so stale ip rules, tap files, runtime and
   pid files of instances without a QEMU are undone and removed there;
2. restarts every instance that should run but does not (status
   ``ERROR_down``: ``admin_state`` up, not running, and not shut down from
   inside the guest — a ``USER_down`` instance stays down, as in Ganeti), one
   ``OP_INSTANCE_STARTUP`` job each, and waits for them. An instance that was
   restarted ``--max-restarts`` passes in a row without being seen running
   is given up on until it runs again (Ganeti's ``MAXTRIES``); the counts
   live in ``<data_dir>/watcher.state`` on the master;
3. archives finished jobs older than ``--job-age`` (its own jobs included).

Everything it does is printed, one line per action. Exit status 1 when a
node could not be cleaned or a restart failed, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.client import Client
from corral.errors import CorralError
from corral.paths import Paths

MAX_RESTARTS = 5  # Ganeti's MAXTRIES
JOB_AGE = 6 * 3600.0  # Ganeti's default --job-age
STATE_FILE = "watcher.state"
BAD_STATUS = "ERROR_down"


@dataclass
class Restart:
    instance: str
    job_id: int
    error: str = ""  # empty: the instance started


@dataclass
class PassReport:
    """What one pass did."""

    cleaned: list[dict[str, Any]] = field(default_factory=list)  # CleanedInstance dicts + node
    node_errors: dict[str, str] = field(default_factory=dict)
    restarts: list[Restart] = field(default_factory=list)
    given_up: list[str] = field(default_factory=list)
    ovn: dict[str, list[str]] = field(default_factory=dict)  # OP_CLUSTER_SYNC_OVN's report
    archived: int = 0

    @property
    def ok(self) -> bool:
        return not self.node_errors and all(not r.error for r in self.restarts)


def load_state(path: Path) -> dict[str, int]:
    """Restart counts by instance; a missing or unreadable file is an empty one."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    counts = raw.get("restarts", {}) if isinstance(raw, dict) else {}
    return {str(k): int(v) for k, v in counts.items() if isinstance(v, int)}


def save_state(path: Path, counts: dict[str, int]) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps({"restarts": counts}, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _statuses(client: Client) -> dict[str, str]:
    result = client.query("instance", ["name", "status"])
    out: dict[str, str] = {}
    for (_, name), (st, status) in result["data"]:
        if st == 0:  # normal value (not "no data" / "offline")
            out[str(name)] = str(status)
    return out


def run_pass(
    client: Client,
    paths: Paths,
    *,
    max_restarts: int = MAX_RESTARTS,
    job_age: float = JOB_AGE,
    out: Callable[[str], None] = print,
) -> PassReport:
    report = PassReport()

    # 1. Dead instances' leftovers, on every online node.
    # The job's log says what each node did, one line per dead instance.
    job = client.submit_job([{"OP_ID": "OP_CLUSTER_CLEANUP_STALE"}])
    try:
        (per_node,) = client.wait_for_job(job, lambda entry: out(str(entry[3])))
    except CorralError as err:
        report.node_errors["*"] = str(err)
        out(f"cleanup job {job} failed: {err}")
        per_node = []
    for entry in per_node:
        if entry.get("error"):
            report.node_errors[entry["node"]] = entry["error"]
        report.cleaned += [{"node": entry["node"], **c} for c in entry.get("cleaned", [])]

    # 1b. OVN ports bound where their instances run (a master that died mid-
    # migration leaves a port requested on two chassis). No-op without OVN.
    job = client.submit_job([{"OP_ID": "OP_CLUSTER_SYNC_OVN"}])
    try:
        (report.ovn,) = client.wait_for_job(job, lambda entry: out(str(entry[3])))
    except CorralError as err:
        report.node_errors["ovn"] = str(err)
        out(f"OVN sync job {job} failed: {err}")

    # 2. Instances that should run but died.
    state_path = paths.data_dir / STATE_FILE
    counts = load_state(state_path)
    statuses = _statuses(client)
    counts = {n: k for n, k in counts.items() if statuses.get(n) == BAD_STATUS}
    jobs: list[tuple[str, int]] = []
    for name, status in sorted(statuses.items()):
        if status != BAD_STATUS:
            continue
        if counts.get(name, 0) >= max_restarts:
            report.given_up.append(name)
            out(
                f"{name}: not restarting: restarted {counts[name]} times in a row and it is "
                "down again; start it by hand (gnt-instance startup) once fixed"
            )
            continue
        counts[name] = counts.get(name, 0) + 1
        job_id = client.submit_job([{"OP_ID": "OP_INSTANCE_STARTUP", "instance_name": name}])
        out(f"{name}: {status}, restarting it (job {job_id})")
        jobs.append((name, job_id))
    save_state(state_path, counts)
    for name, job_id in jobs:
        try:
            client.wait_for_job(job_id)
        except CorralError as err:
            report.restarts.append(Restart(name, job_id, str(err)))
            out(f"{name}: restart failed: {err}")
        else:
            report.restarts.append(Restart(name, job_id))
            out(f"{name}: restarted")

    # 3. Old jobs (the watcher makes some every run).
    if job_age > 0:
        report.archived, _ = client.call("AutoArchiveJobs", [job_age, None])
        if report.archived:
            out(f"archived {report.archived} job(s) older than {job_age:g}s")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="corral-watcher",
        description="One pass of the watchdog: clean up after dead instances, restart "
        "instances that should run (run it from cron or a systemd timer)",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=MAX_RESTARTS,
        help=f"restarts in a row before giving up on an instance (default {MAX_RESTARTS})",
    )
    parser.add_argument(
        "--job-age",
        type=float,
        default=JOB_AGE,
        help=f"archive finished jobs older than this many seconds; 0: don't (default {JOB_AGE:g})",
    )
    parser.add_argument("-d", "--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    paths = Paths.from_env()
    if not os.path.exists(paths.master_socket):
        print(f"no master daemon on this node ({paths.master_socket}): nothing to do")
        return 0
    client = Client(paths)
    try:
        report = run_pass(client, paths, max_restarts=args.max_restarts, job_age=args.job_age)
    except CorralError as err:
        if args.debug:
            raise
        print(f"Failure: {err} [{err.code.value}]", file=sys.stderr)
        return err.code.exit_code
    finally:
        client.close()
    return 0 if report.ok else 1


def console_main() -> None:
    sys.exit(main())

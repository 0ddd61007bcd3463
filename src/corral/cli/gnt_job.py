"""``gnt-job``: job queue commands, with Ganeti's syntax.

Layer: CLI.
"""

from __future__ import annotations

import argparse
import json
import re
import time

from corral.cli.common import (
    EXIT_FAILURE,
    EXIT_SUCCESS,
    Command,
    add_list_options,
    cli_main,
    list_command,
    list_fields_command,
    print_log_entry,
    setup_list_fields,
)
from corral.client import Client
from corral.errors import ECode, JobError, ParameterError

DEFAULT_FIELDS = ["id", "status", "summary"]

_STATUS_SETS = {
    "pending": ["queued", "waiting"],
    "running": ["running", "canceling"],
    "error": ["error"],
    "finished": ["success", "error", "canceled"],
}


def _ids(values: list[str]) -> list[int]:
    out = []
    for v in values:
        if not v.isdigit():
            raise ParameterError("job_id", f"invalid job id {v!r}")
        out.append(int(v))
    return out


def _setup_list(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_ids", nargs="*")
    add_list_options(p)
    for name in _STATUS_SETS:
        p.add_argument(f"--{name}", action="store_true", help=f"only {name} jobs")


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    wanted = [s for name, ss in _STATUS_SETS.items() if getattr(args, name) for s in ss]
    if wanted:
        extra = " or ".join(f'status == "{s}"' for s in wanted)
        args.filter = f"({args.filter}) and ({extra})" if args.filter else extra
    _ids(args.job_ids)
    return list_command(client, "job", args, DEFAULT_FIELDS, args.job_ids)


def cmd_list_fields(client: Client, args: argparse.Namespace) -> int:
    return list_fields_command(client, "job", args)


def _setup_ids(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_ids", nargs="+")


def _ts(v: float | None) -> str:
    if v is None:
        return "N/A"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v)) + f".{int(v % 1 * 1e6):06d}"


INFO_FIELDS = [
    "id",
    "ops",
    "status",
    "received_ts",
    "start_ts",
    "end_ts",
    "opstatus",
    "oplog",
    "opresult",
    "opstart",
    "opexec",
    "opend",
    "summary",
    "priority",
]


def cmd_info(client: Client, args: argparse.Namespace) -> int:
    rows = client.call("QueryJobs", [_ids(args.job_ids), INFO_FIELDS])
    missing = []
    for job_id, row in zip(args.job_ids, rows, strict=True):
        if row is None:
            print(f"Job ID: {job_id} not found")
            missing.append(job_id)
            continue
        v = dict(zip(INFO_FIELDS, row, strict=True))
        print(f"- Job ID: {v['id']}")
        print(f"  Status: {v['status']}")
        print(f"  Priority: {v['priority']}")
        print(f"  Received:         {_ts(v['received_ts'])}")
        print(f"  Processing start: {_ts(v['start_ts'])}")
        print(f"  Processing end:   {_ts(v['end_ts'])}")
        if v["start_ts"] and v["end_ts"]:
            print(f"  Total processing time: {v['end_ts'] - v['start_ts']:.6f} seconds")
        print("  Opcodes:")
        for op, st, log, res, s, e, en in zip(
            v["ops"],
            v["opstatus"],
            v["oplog"],
            v["opresult"],
            v["opstart"],
            v["opexec"],
            v["opend"],
            strict=True,
        ):
            print(f"    - Opcode: {op['OP_ID']}")
            print(f"      Status: {st}")
            print(f"      Processing start: {_ts(s)}")
            print(f"      Execution start:  {_ts(e)}")
            print(f"      Processing end:   {_ts(en)}")
            print("      Input fields:")
            for k, val in op.items():
                if k != "OP_ID":
                    print(f"        {k}: {json.dumps(val)}")
            print(f"      Result: {json.dumps(res)}")
            print("      Execution log:")
            for entry in log:
                _serial, (sec, usec), _kind, msg = entry
                print(f"        - {time.ctime(sec + usec / 1e6)} {msg}")
    if missing:
        raise JobError(f"job(s) {', '.join(missing)} not found", ECode.NOENT)
    return EXIT_SUCCESS


def _setup_watch(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id")


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    (job_id,) = _ids([args.job_id])
    print(f"Output from job {job_id} follows")
    print("-----------------------------")
    try:
        client.wait_for_job(job_id, print_log_entry)
    except Exception:
        (row,) = client.call("QueryJobs", [[job_id], ["status"]])
        if row is None:
            raise
        print(f"Job {job_id} ended with status {row[0]}")
        return EXIT_FAILURE
    return EXIT_SUCCESS


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    rc = EXIT_SUCCESS
    for job_id in _ids(args.job_ids):
        ok, msg = client.call("CancelJob", [job_id])
        print(msg)
        if not ok:
            rc = EXIT_FAILURE
    return rc


def cmd_archive(client: Client, args: argparse.Namespace) -> int:
    for job_id in _ids(args.job_ids):
        client.call("ArchiveJob", [job_id])
    return EXIT_SUCCESS


def _setup_autoarchive(p: argparse.ArgumentParser) -> None:
    p.add_argument("age", help="archive finished jobs older than this: 30s, 2h, 7d or all")


def parse_age(text: str) -> float:
    if text == "all":
        return 0.0
    m = re.fullmatch(r"(\d+)([smhdw]?)", text)
    if not m:
        raise ParameterError("age", f"invalid age {text!r} (e.g. 30s, 2h, 7d, all)")
    mult = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return float(int(m.group(1)) * mult)


def cmd_autoarchive(client: Client, args: argparse.Namespace) -> int:
    count, _ = client.call("AutoArchiveJobs", [parse_age(args.age), None])
    print(f"Archived {count} jobs")
    return EXIT_SUCCESS


COMMANDS = [
    Command("list", cmd_list, _setup_list, "list jobs"),
    Command("list-fields", cmd_list_fields, setup_list_fields, "list the fields of jobs"),
    Command("info", cmd_info, _setup_ids, "show details of jobs"),
    Command("watch", cmd_watch, _setup_watch, "follow a job's log until it ends"),
    Command("cancel", cmd_cancel, _setup_ids, "cancel jobs"),
    Command("archive", cmd_archive, _setup_ids, "archive finished jobs"),
    Command("autoarchive", cmd_autoarchive, _setup_autoarchive, "archive old finished jobs"),
]

main = cli_main("gnt-job", COMMANDS, "Job queue administration")

"""Shared CLI machinery: Ganeti's option syntax, tables, jobs, exit codes.

Layer: CLI (imports ``client``, ``errors``, ``qlang``; deliberately not the
master's modules, so ``gnt-*`` start fast). Parameter *values* are checked
by the master, which owns the declarations; the CLI only splits Ganeti's
syntax (``--net 0:mode=bridged,link=br0``, ``-H kvm:kernel_path=/x``,
``-B memory=512M``) into structures and reports malformed text itself.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence

from corral.cli import qlang
from corral.client import Client
from corral.errors import CorralError, ECode, ParameterError
from corral.units import parse_size

TYPE_CHECKING = False  # not typing's: see corral.errors
if TYPE_CHECKING:
    from typing import Any, NoReturn

EXIT_SUCCESS = 0
EXIT_FAILURE = 1

PRIORITIES = {"low": 10, "normal": 0, "high": -10}

# What ``--net``/``--disk`` take (gnt-instance add, and modify's add).
NIC_KEYS = frozenset({"mac", "ip", "mode", "link", "vlan", "network", "name"})
DISK_KEYS = frozenset({"size", "mode", "name", "spindles"})


class UsageError(CorralError):
    default_code = ECode.INVAL


# --- Ganeti's option syntax ---------------------------------------------------------


def split_escaped(text: str, sep: str = ",") -> list[str]:
    r"""Split on ``sep`` unless escaped with a backslash (``a\,b`` stays one item)."""
    out, cur, esc = [], [], False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parse_keyval(text: str, what: str) -> dict[str, str]:
    """``key=val,no_flag,-reset`` → ``{"key": "val", "flag": "no", "reset": "default"}``."""
    out: dict[str, str] = {}
    if text == "":
        return out
    for item in split_escaped(text):
        if not item:
            raise ParameterError(what, f"empty element in {text!r}")
        if "=" in item:
            key, val = item.split("=", 1)
        elif item.startswith("no_"):
            key, val = item[3:], "no"
        elif item.startswith("-"):
            key, val = item[1:], "default"
        else:
            key, val = item, "yes"
        if not key or not key.replace("_", "").replace("-", "").isalnum():
            raise ParameterError(what, f"invalid parameter name {key!r} in {text!r}")
        if key in out:
            raise ParameterError(what, f"parameter {key!r} given twice")
        out[key] = val
    return out


def parse_ident_keyval(text: str, what: str) -> tuple[str, dict[str, str]]:
    """``0:size=1G`` → ``("0", {"size": "1G"})``; ``add:…``, ``N:remove`` alike."""
    ident, sep, rest = text.partition(":")
    if not ident:
        raise ParameterError(what, f"missing identifier in {text!r} (expected e.g. 0:size=1G)")
    return ident, parse_keyval(rest, what) if sep else {}


def parse_hv_option(text: str) -> tuple[str, dict[str, str]]:
    """``-H kvm:kernel_path=/x`` → ``("kvm", {...})``; ``-H kvm`` selects the hypervisor."""
    hv, sep, rest = text.partition(":")
    if not hv or not hv.isalnum():
        raise ParameterError("hvparams", f"invalid hypervisor in {text!r} (expected hv:k=v)")
    return hv, parse_keyval(rest, "hvparams") if sep else {}


def parse_size_text(text: str, what: str) -> int:
    """Sizes in MiB with Ganeti's units; the master re-checks limits."""
    return parse_size(text, what)


def seconds(text: str) -> float:
    """``argparse`` type for timeouts: a finite number (the master checks the range)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid number of seconds {text!r}")
    return value


def indexed_options(values: Sequence[str], what: str) -> list[dict[str, str]]:
    """``--disk 0:size=1G --disk 1:size=2G`` → a list ordered by index."""
    by_idx: dict[int, dict[str, str]] = {}
    for v in values:
        # The index first: in ``mac=aa:bb:…`` (index forgotten) the first ':' is the MAC's.
        ident = v.partition(":")[0]
        try:
            idx = int(ident)
        except ValueError:
            raise ParameterError(
                what, f"invalid index {ident!r} in {v!r} (expected N:key=value,…)"
            ) from None
        _, kv = parse_ident_keyval(v, what)
        if idx < 0 or idx > 64:
            raise ParameterError(what, f"index {idx} out of range")
        if idx in by_idx:
            raise ParameterError(what, f"index {idx} given twice")
        by_idx[idx] = kv
    if sorted(by_idx) != list(range(len(by_idx))):
        raise ParameterError(what, f"indexes must be 0..{len(by_idx) - 1} without gaps")
    return [by_idx[i] for i in range(len(by_idx))]


# --- output ------------------------------------------------------------------------------


def format_unit(mib: float, units: str) -> str:
    if units == "m":
        return str(int(mib))
    if units == "g":
        return f"{mib / 1024:.1f}"
    if units == "t":
        return f"{mib / 1024 / 1024:.1f}"
    if mib < 1024:
        return f"{int(mib)}M"
    if mib < 1024 * 1024:
        return f"{mib / 1024:.1f}G"
    return f"{mib / 1024 / 1024:.1f}T"


_STATUS_TEXT = {1: "(unknown)", 2: "?", 3: "-", 4: "*"}


def format_value(kind: str, status: int, value: Any, units: str) -> str:
    if status != 0:
        return _STATUS_TEXT.get(status, "?")
    if value is None:
        return "-"
    if kind == "bool":
        return "Y" if value else "N"
    if kind == "unit" and isinstance(value, int | float):
        return format_unit(value, units)
    if kind == "timestamp" and isinstance(value, int | float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    if isinstance(value, list):
        return ",".join("-" if v is None else str(v) for v in value)
    return str(value)


def print_table(
    headers: list[str],
    rows: list[list[str]],
    numeric: list[bool],
    separator: str | None,
    no_headers: bool,
) -> None:
    out = sys.stdout
    lines: list[str] = []
    if separator is not None:
        if not no_headers:
            lines.append(separator.join(headers))
        lines.extend(separator.join(r) for r in rows)
    else:
        widths = [len(h) if not no_headers else 0 for h in headers]
        for r in rows:
            for i, c in enumerate(r):
                if len(c) > widths[i]:
                    widths[i] = len(c)

        def fmt(r: list[str]) -> str:
            cells = [
                c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(r)
            ]
            return " ".join(cells).rstrip()

        if not no_headers:
            lines.append(fmt(headers))
        lines.extend(fmt(r) for r in rows)
    if lines:
        out.write("\n".join(lines) + "\n")


def fields_option(value: str | None, default: list[str]) -> list[str]:
    if not value:
        return list(default)
    if value.startswith("+"):
        return default + [f for f in value[1:].split(",") if f]
    return [f for f in value.split(",") if f]


def list_command(
    client: Client,
    what: str,
    args: argparse.Namespace,
    default_fields: list[str],
    names: list[str] | None = None,
    formatters: dict[str, Callable[[Any], str]] | None = None,
) -> int:
    """Ganeti's ``list``; ``formatters``: how to show some fields' values (by field name)."""
    fields = fields_option(args.output, default_fields)
    qfilter = qlang.parse(args.filter) if getattr(args, "filter", None) else None
    units = args.units or ("h" if args.separator is None else "m")
    if units not in ("h", "m", "g", "t"):
        raise ParameterError("units", f"invalid unit {units!r} (use h, m, g or t)")
    result = client.query(what, fields, qfilter, names or None)
    defs = result["fields"]
    fmts = formatters or {}
    rows = [
        [
            fmts[d["name"]](val)
            if d["name"] in fmts and st == 0 and val is not None
            else format_value(d["kind"], st, val, units)
            for d, (st, val) in zip(defs, row, strict=True)
        ]
        for row in result["data"]
    ]
    numeric = [d["kind"] in ("number", "unit") for d in defs]
    print_table([d["title"] for d in defs], rows, numeric, args.separator, args.no_headers)
    return EXIT_SUCCESS


def list_fields_command(client: Client, what: str, args: argparse.Namespace) -> int:
    result = client.call("QueryFields", [what, args.fields or None])
    rows = [[f["name"], f["kind"], f["title"], f["doc"]] for f in result["fields"]]
    print_table(
        ["Name", "Type", "Title", "Description"], rows, [False] * 4, args.separator, args.no_headers
    )
    return EXIT_SUCCESS


def add_list_options(p: argparse.ArgumentParser, with_filter: bool = True) -> None:
    p.add_argument("-o", "--output", help="fields to show (comma-separated; +f adds)")
    p.add_argument("--no-headers", action="store_true", help="do not print column headers")
    p.add_argument("--separator", help="separate columns with this string")
    p.add_argument("--units", help="units for sizes: h(uman), m, g, t")
    if with_filter:
        p.add_argument("-F", "--filter", help="filter in Ganeti's query language")


def setup_list_fields(p: argparse.ArgumentParser) -> None:
    p.add_argument("fields", nargs="*")
    p.add_argument("--no-headers", action="store_true")
    p.add_argument("--separator")


# --- jobs ------------------------------------------------------------------------------


def add_submit_options(p: argparse.ArgumentParser, dry_run: bool = True) -> None:
    p.add_argument("--submit", action="store_true", help="submit the job and return its id")
    p.add_argument("--priority", choices=sorted(PRIORITIES), default="normal", help="job priority")
    if dry_run:
        p.add_argument("--dry-run", action="store_true", help="check everything, change nothing")


def op_common(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"priority": PRIORITIES[getattr(args, "priority", "normal")]}
    if getattr(args, "dry_run", False):
        out["dry_run"] = True
    if getattr(args, "reason", None):
        out["reason"] = [["user", args.reason, time.time()]]
    return out


def print_log_entry(entry: list[Any]) -> None:
    _serial, (sec, usec), _kind, message = entry
    stamp = time.ctime(sec + usec / 1e6)
    print(f"{stamp} {message}", flush=True)


def submit_or_wait(
    client: Client, ops: list[dict[str, Any]], args: argparse.Namespace, feedback: bool = True
) -> Any:
    """Submit a job; with ``--submit`` print ``JobID: N`` and return None."""
    job_id = client.submit_job(ops)
    if getattr(args, "submit", False):
        print(f"JobID: {job_id}")
        return None
    results = client.wait_for_job(job_id, print_log_entry if feedback else None)
    return results[-1] if results else None


def submit_each(
    client: Client,
    args: argparse.Namespace,
    names: list[str],
    build: Callable[[str], dict[str, Any]],
) -> int:
    """One job per instance (they run in parallel); report each, go on with the others."""
    if len(names) == 1:
        submit_or_wait(client, [build(names[0])], args)
        return EXIT_SUCCESS
    ids = [client.submit_job([build(n)]) for n in names]
    if args.submit:
        for i in ids:
            print(f"JobID: {i}")
        return EXIT_SUCCESS
    failed = 0
    for name, job_id in zip(names, ids, strict=True):
        try:
            client.wait_for_job(job_id, print_log_entry)
        except Exception as err:  # report each instance, go on with the others
            print(f"{name}: failed: {err}")
            failed += 1
    return EXIT_FAILURE if failed else EXIT_SUCCESS


def confirm(question: str, force: bool) -> bool:
    """Ask on the terminal unless ``force``; without a terminal, refuse."""
    if force:
        return True
    if not sys.stdin.isatty():
        raise UsageError(
            f"{question.splitlines()[0]} Refusing without --force (no terminal to ask)", ECode.INVAL
        )
    sys.stderr.write(question + " y/[n]: ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


# --- running a gnt-* program -----------------------------------------------------------


class Command:
    """One sub-command of a program. A plain class: a NamedTuple needs typing
    and a dataclass dataclasses (with inspect), each milliseconds of every run."""

    __slots__ = ("aliases", "func", "help", "name", "setup")

    def __init__(
        self,
        name: str,
        func: Callable[[Client, argparse.Namespace], int],
        setup: Callable[[argparse.ArgumentParser], None],
        help: str,
        aliases: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.func = func
        self.setup = setup
        self.help = help
        self.aliases = aliases


def lazy(module: str, name: str) -> Callable[..., Any]:
    """``corral.cli.<module>.<name>``, imported when first called: a program's
    commands that live in their own modules load them only when they run."""

    def call(*args: Any) -> Any:
        return getattr(importlib.import_module(f"corral.cli.{module}"), name)(*args)

    call.__qualname__ = f"{module}.{name}"
    return call


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: usage error: {message}\n")
        raise SystemExit(ECode.INVAL.exit_code)


def build_parser(
    prog: str, commands: list[Command], description: str, argv: Sequence[str] | None = None
) -> _Parser:
    """The program's parser; given the ``argv`` it will parse, only what that needs.

    A run that plainly names a command gets a parser knowing just that command:
    the sub-parsers of all of them cost ~10 ms of every run (argparse looks up
    translations for each), parsers that would never be used. Anything else
    (``--help``, an unknown command) gets them all, so messages list every command.
    """
    only = _named_command(commands, argv) if argv is not None else None
    parser = _Parser(prog=prog, description=description)
    parser.add_argument("-d", "--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for c in commands if only is None else [only]:
        p = sub.add_parser(c.name, help=c.help, aliases=list(c.aliases), description=c.help)
        c.setup(p)
        p.set_defaults(_func=c.func)
    return parser


def _named_command(commands: list[Command], argv: Sequence[str]) -> Command | None:
    """The command ``argv`` names after nothing but ``-d``, else ``None``."""
    for word in argv:
        if word not in ("-d", "--debug"):
            return next((c for c in commands if word == c.name or word in c.aliases), None)
    return None


def run(prog: str, commands: list[Command], description: str, argv: list[str] | None = None) -> int:
    parser = build_parser(prog, commands, description, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    client = Client()
    try:
        return int(args._func(client, args))
    except CorralError as err:
        if args.debug:
            raise
        print(f"Failure: {err} [{err.code.value}]", file=sys.stderr)
        return err.code.exit_code
    except KeyboardInterrupt:
        print("Aborted.", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    finally:
        client.close()


def cli_main(prog: str, commands: list[Command], description: str) -> Callable[[], None]:
    def main() -> None:
        code = run(prog, commands, description)
        # Done: skip the interpreter's teardown (freeing every module, ~7 ms
        # of each gnt-* call; nothing the CLI registers needs it).
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe (| head): nothing more to say
            pass
        os._exit(code if isinstance(code, int) else 1)

    return main

"""``corral testguest build|path``: the test guest's kernel and initramfs.

Layer: CLI (imports ``testguest``). ``build`` needs apt's network the first
time only; both print ``kernel``, ``initrd`` and ``version`` lines (or JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from corral import testguest
from corral.errors import ECode


def _show(image: testguest.GuestImage, as_json: bool) -> None:
    if as_json:
        doc = {
            "kernel": str(image.kernel),
            "initrd": str(image.initrd),
            "kernel_version": image.kernel_version,
        }
        print(json.dumps(doc, indent=2))
        return
    print(f"kernel  {image.kernel}")
    print(f"initrd  {image.initrd}")
    print(f"version {image.kernel_version}")


def cmd_build(args: argparse.Namespace) -> int:
    _show(testguest.build(args.cache, force=args.force), args.json)
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    image = testguest.cached(args.cache)
    if image is None:
        where = testguest.resolve_cache_dir(args.cache)
        print(
            f"corral testguest: no current test guest in {where}: run 'corral testguest build'",
            file=sys.stderr,
        )
        return ECode.NOENT.exit_code
    _show(image, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="corral testguest",
        description="The test guest: a small Linux VM (kernel + initramfs) that reports its "
        "NICs and disks on the serial console.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    cache_help = f"cache directory (default: ${testguest.CACHE_ENV} or {testguest.DEFAULT_CACHE})"

    b = sub.add_parser("build", help="build it (once: later calls reuse the cache)")
    b.add_argument("--force", action="store_true", help="rebuild even if a current one is cached")
    b.add_argument("--cache", type=Path, help=cache_help)
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_build)

    pa = sub.add_parser("path", help="print the paths of the built kernel and initrd")
    pa.add_argument("--cache", type=Path, help=cache_help)
    pa.add_argument("--json", action="store_true")
    pa.set_defaults(func=cmd_path)

    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rc: int = args.func(args)
    except testguest.GuestError as err:
        print(f"corral testguest: {err}", file=sys.stderr)
        return err.code.exit_code
    return rc


if __name__ == "__main__":
    sys.exit(main())

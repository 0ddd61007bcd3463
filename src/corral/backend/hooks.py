"""Run hook scripts on a node (Ganeti's ``hooks_runner``).

Layer: node backend. Scripts live in ``<hooks_dir>/<hpath>-<phase>.d/``;
like ``run-parts``, only executable files whose names match
``^[a-zA-Z0-9_-]+$`` run, in name order; others are reported as skipped.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Literal

from corral.rpc.types import HookScriptResult

RUN_PARTS_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
SCRIPT_TIMEOUT = 300.0
MAX_OUTPUT = 64 * 1024
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


async def _run_one(path: Path, env: dict[str, str]) -> HookScriptResult:
    try:
        proc = await asyncio.create_subprocess_exec(
            str(path),
            cwd="/",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as err:
        return HookScriptResult(script=path.name, status="fail", output=f"cannot run: {err}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), SCRIPT_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return HookScriptResult(
            script=path.name, status="fail", output=f"timed out after {SCRIPT_TIMEOUT:.0f}s"
        )
    text = out[:MAX_OUTPUT].decode("utf-8", "replace")
    status: Literal["success", "fail"] = "success" if proc.returncode == 0 else "fail"
    if status == "fail" and not text:
        text = f"exited with status {proc.returncode}"
    return HookScriptResult(script=path.name, status=status, output=text)


async def run_hooks(
    hooks_dir: Path, hpath: str, phase: str, env: dict[str, str]
) -> list[HookScriptResult]:
    d = hooks_dir / f"{hpath}-{phase}.d"
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return []
    full_env = {"PATH": DEFAULT_PATH, **env}
    results: list[HookScriptResult] = []
    for name in names:
        path = d / name
        if not RUN_PARTS_RE.match(name) or not path.is_file() or not os.access(path, os.X_OK):
            results.append(HookScriptResult(script=name, status="skip", output=""))
            continue
        results.append(await _run_one(path, full_env))
    return results

"""Hooks on the master side: Ganeti's environment and running the phases.

Layer: logical-unit support (imports config, rpc client). The environment
is Ganeti's (``GANETI_HOOKS_VERSION=2``, ``GANETI_OP_CODE``,
``GANETI_HOOKS_PHASE``, ``GANETI_OBJECT_TYPE``, ``GANETI_INSTANCE_*`` …) so
hooks written for Ganeti run unchanged. Scripts run on nodes through the
``hooks_runner`` RPC. A failing pre-hook aborts the operation with the
hook's output in the error; a failing post-hook is a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from corral.config.writer import ConfigWriter
from corral.errors import HooksAbort
from corral.paths import Paths
from corral.rpc import defs
from corral.rpc.client import NodeTarget, RpcClient
from corral.rpc.types import HooksRunArgs

HOOKS_VERSION = 2


def build_env(
    cfg: ConfigWriter,
    paths: Paths,
    op_id: str,
    hpath: str,
    htype: str | None,
    phase: str,
    lu_env: Mapping[str, str],
    post_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment of one hooks phase (pure)."""
    env = {
        "GANETI_HOOKS_VERSION": str(HOOKS_VERSION),
        "GANETI_OP_CODE": op_id,
        "GANETI_DATA_DIR": str(paths.data_dir),
        "GANETI_HOOKS_PHASE": phase,
        "GANETI_HOOKS_PATH": hpath,
        "GANETI_CLUSTER": cfg.cluster.cluster_name,
        "GANETI_MASTER": cfg.master_node.name,
    }
    if htype:
        env["GANETI_OBJECT_TYPE"] = htype
    env.update((f"GANETI_{k}", _s(v)) for k, v in lu_env.items())
    if post_env is not None:
        env.update((f"GANETI_POST_{k}", _s(v)) for k, v in post_env.items())
    return env


def _s(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    return str(v)


async def run_phase(
    rpc: RpcClient,
    nodes: list[NodeTarget],
    hpath: str,
    phase: Literal["pre", "post"],
    env: dict[str, str],
    warn: Callable[[str], None],
) -> None:
    """Run one phase on ``nodes``; raise HooksAbort if a pre-hook failed."""
    if not nodes:
        return
    results = await rpc.call_multi(
        nodes, defs.HOOKS_RUNNER, HooksRunArgs(hpath=hpath, phase=phase, env=env)
    )
    failures: list[str] = []
    for node, res in results.items():
        if res.offline:
            continue
        if res.fail_msg is not None:
            # A node we could not run hooks on: Ganeti treats it as a warning.
            warn(f"Communication failure running {phase}-hooks on {node}: {res.fail_msg}")
            continue
        assert res.payload is not None
        for script in res.payload.results:
            if script.status == "fail":
                out = script.output.strip()
                failures.append(
                    f"{node}: {script.script}: {out}" if out else f"{node}: {script.script}"
                )
    if not failures:
        return
    if phase == "pre":
        raise HooksAbort(
            f"Hooks failure: pre-hook(s) of {hpath} failed: " + "; ".join(failures), hooks=failures
        )
    for f in failures:
        warn(f"post-hook failed: {f}")

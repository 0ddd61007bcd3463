"""Fuzzing the node-side RPC dispatcher: any call name, any bytes, always a JSON reply.

In process, no network. Handlers that touch the host outside the test root
(start VMs, create or delete disk files at given paths, run hook scripts,
sleep) are replaced by stubs, so arguments that happen to decode do no
harm; every other handler runs for real against a private root.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.backend import load
from corral.backend.dispatch import HANDLERS, MAX_BODY, dispatch
from corral.backend.node import NodeBackend
from corral.paths import Paths
from corral.rpc import types as t
from corral.rpc.defs import CALLS

load()

UNSAFE = {
    "instance_start",
    "instance_shutdown",
    "instance_reboot",
    "blockdev_create",
    "blockdev_remove",
    "hooks_runner",
    "test_delay",
    # OS scripts: whatever definitions the host has, run with made-up instances
    "os_validate",
    "instance_os_add",
    "instance_run_rename",
    "instance_os_export",
    "instance_os_import",
}
assert set(CALLS) >= UNSAFE


async def _stub(b: Any, args: Any) -> Any:
    return t.Empty() if not isinstance(args, t.HooksRunArgs) else t.HooksResult(results=[])


FIELDS = sorted(
    {f.encode_name for c in CALLS.values() for f in msgspec.structs.fields(c.args)}
    | {"instance", "disk", "name", "uuid", "hypervisor", "beparams", "hvparams"}
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=15,
)


def _json_bytes(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError):
        return b"{}"


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(_json_bytes),
    st.just(b" " * (MAX_BODY + 1)),
)
names = st.one_of(st.sampled_from(sorted(CALLS)), st.text(max_size=30))


@pytest.fixture(scope="module")
def backend() -> Iterator[NodeBackend]:
    root = Path(tempfile.mkdtemp(prefix="corral-fuzz-"))
    paths = Paths(root)
    paths.ensure()
    with mock.patch.dict(HANDLERS, {n: _stub for n in UNSAFE}):
        yield NodeBackend(paths, "node1")
    shutil.rmtree(root, ignore_errors=True)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(name=names, body=bodies)
def test_dispatch_always_replies(backend: NodeBackend, name: str, body: bytes) -> None:
    reply = asyncio.run(dispatch(backend, name, body))
    decoded = msgspec.json.decode(reply)
    assert isinstance(decoded, dict)
    assert decoded["ok"] in (True, False)
    if decoded["ok"]:
        assert "result" in decoded
        assert name in CALLS
    else:
        err = decoded["error"]
        assert isinstance(err["message"], str) and isinstance(err["code"], str)


def test_dispatch_known_replies(backend: NodeBackend) -> None:
    ok = msgspec.json.decode(asyncio.run(dispatch(backend, "version", b"{}")))
    assert ok["ok"] is True and ok["result"]["protocol"] >= 1
    for name, body, what in (
        ("nope", b"{}", "unknown RPC call"),
        ("version", b"\xff", "invalid arguments"),
        ("test_delay", b'{"duration": "x"}', "invalid arguments"),
        ("version", b" " * (MAX_BODY + 1), "too large"),
    ):
        r = msgspec.json.decode(asyncio.run(dispatch(backend, name, body)))
        assert r["ok"] is False and what in r["error"]["message"], r

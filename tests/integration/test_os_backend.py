"""OS scripts run by the node backend, in process against a private root.

Export and import go through Debian's ``ganeti-os-noop`` unchanged (its
export announces the size on ``EXP_SIZE_FD``); a test OS checks the clean
environment, the log of a failing script, the timeout that kills a
script's whole process group, and ``verify``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.backend import osapi as bos
from corral.backend.node import NodeBackend
from corral.errors import OpExecError, OpPrereqError, ParameterError
from corral.osapi import runner
from corral.params import BeParams
from corral.paths import Paths
from corral.rpc import types as t

NOOP = Path("/usr/share/ganeti/os/noop")
MiB = 1 << 20


@pytest.fixture
def backend() -> Iterator[NodeBackend]:
    root = Path(tempfile.mkdtemp(prefix="cx-osb-"))
    paths = Paths(root)
    paths.ensure()
    try:
        yield NodeBackend(paths, "node1")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _disk(b: NodeBackend, idx: int, data: bytes) -> t.DiskSpec:
    path = f"/srv/corral/file-storage/inst-uuid/disk{idx}.img"
    local = b.paths.host_path(path)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return t.DiskSpec(
        uuid=f"disk-{idx}", index=idx, dev_type="file", size=len(data) // MiB, path=path
    )


def _spec(os_name: str, disks: list[t.DiskSpec]) -> t.InstanceSpec:
    return t.InstanceSpec(
        name="inst1",
        uuid="inst-uuid",
        hypervisor="fake",
        os=os_name,
        hvparams={"start_delay": 0.0},
        beparams=BeParams(),
        disks=disks,
    )


def _install(b: NodeBackend, name: str, create: str, verify: str = "exit 0") -> Path:
    d = b.paths.host_path(f"/srv/corral/os/{name}")
    d.mkdir(parents=True)
    (d / "ganeti_api_version").write_text("20\n")
    (d / "variants.list").write_text("default\n")
    (d / "parameters.list").write_text("flavour The flavour\n")
    scripts = {"create": create, "verify": verify, "import": "exit 0", "export": "exit 0"}
    scripts["rename"] = "exit 0"
    for s, body in scripts.items():
        (d / s).write_text(f"#!/bin/sh\n{body}\n")
        (d / s).chmod(0o755)
    return d


@pytest.mark.skipif(not NOOP.is_dir(), reason="Debian's ganeti-os-noop is not installed")
def test_noop_export_then_import_copies_a_disk(backend: NodeBackend) -> None:
    b = backend
    pattern = bytes(range(256)) * (4 * MiB // 256)
    src, dst = _disk(b, 0, pattern), _disk(b, 1, b"\0" * (4 * MiB))
    spec = _spec("noop", [src, dst])
    image = "/srv/corral/export/inst1/disk0.img"

    res = asyncio.run(
        bos.instance_os_export(b, t.InstanceOsExportArgs(instance=spec, disk_index=0, dest=image))
    )
    assert b.paths.host_path(image).read_bytes() == pattern
    assert res.size == res.size_hint == len(pattern)  # noop announced it on EXP_SIZE_FD
    assert Path(res.log).name.startswith("export-noop-inst1-disk0-")
    assert Path(res.log).parent == b.paths.log_dir / "os"

    asyncio.run(
        bos.instance_os_import(b, t.InstanceOsImportArgs(instance=spec, disk_index=1, source=image))
    )
    assert b.paths.host_path(dst.path or "").read_bytes() == pattern


def test_export_and_import_stay_in_the_export_directory(backend: NodeBackend) -> None:
    spec = _spec("noop", [_disk(backend, 0, b"\0" * MiB)])
    for bad in (
        "/etc/passwd",
        "/srv/corral/export/../../etc/x",
        "relative/x",
        "/srv/corral/export",
    ):
        with pytest.raises(ParameterError, match="under /srv/corral/export"):
            asyncio.run(
                bos.instance_os_export(
                    backend, t.InstanceOsExportArgs(instance=spec, disk_index=0, dest=bad)
                )
            )
        with pytest.raises(ParameterError, match="under /srv/corral/export"):
            asyncio.run(
                bos.instance_os_import(
                    backend, t.InstanceOsImportArgs(instance=spec, disk_index=0, source=bad)
                )
            )


def test_failed_export_leaves_no_partial_image(backend: NodeBackend) -> None:
    b = backend
    d = _install(b, "failexp", "exit 0")
    (d / "export").write_text('#!/bin/sh\nhead -c 1000 "$EXPORT_DEVICE"\necho broken >&2\nexit 4\n')
    spec = _spec("failexp", [_disk(b, 0, b"x" * MiB)])
    image = "/srv/corral/export/inst1/disk0.img"
    with pytest.raises(OpExecError, match="exited with status 4") as err:
        asyncio.run(
            bos.instance_os_export(
                b, t.InstanceOsExportArgs(instance=spec, disk_index=0, dest=image)
            )
        )
    assert "broken" in err.value.message
    assert os.listdir(b.paths.host_path("/srv/corral/export/inst1")) == []


def test_create_gets_only_the_os_environment(
    backend: NodeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = backend
    monkeypatch.setenv("CX_SHOULD_NOT_LEAK", "1")
    _install(b, "envos", 'env > "$DISK_0_PATH.env"; pwd >> "$DISK_0_PATH.env"')
    disk = _disk(b, 0, b"\0" * MiB)
    spec = _spec("envos", [disk])
    res = asyncio.run(
        bos.instance_os_add(
            b,
            t.InstanceOsAddArgs(instance=spec, osparams={"flavour": "x"}, reinstall=True, debug=1),
        )
    )
    lines = (b.paths.host_path(disk.path or "").parent / "disk0.img.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines[:-1])
    assert lines[-1] == str(b.paths.host_path("/srv/corral/os/envos"))  # cwd: the OS dir
    assert "CX_SHOULD_NOT_LEAK" not in env and "CORRAL_ROOT" not in env
    assert env["INSTANCE_REINSTALL"] == "1"
    assert env["OSP_FLAVOUR"] == "x" and env["OS_VARIANT"] == "default"
    assert env["DEBUG_LEVEL"] == "1"
    assert env["DISK_0_PATH"] == str(b.paths.host_path(disk.path or ""))
    assert Path(res.log).name.startswith("add-envos-inst1-")


def test_failing_create_reports_the_log_tail_and_path(backend: NodeBackend) -> None:
    b = backend
    body = 'for i in $(seq 1 30); do echo "line $i"; done; echo "no space left" >&2; exit 3'
    _install(b, "failos", body)
    spec = _spec("failos", [_disk(b, 0, b"\0" * MiB)])
    with pytest.raises(OpExecError) as err:
        asyncio.run(bos.instance_os_add(b, t.InstanceOsAddArgs(instance=spec)))
    msg = err.value.message
    assert "OS create script failed (exited with status 3)" in msg
    assert "no space left" in msg and "line 30" in msg
    assert "line 10\n" not in msg  # only the last lines
    (log,) = (b.paths.log_dir / "os").iterdir()
    assert str(log) in msg and err.value.fields["log"] == str(log)
    assert "line 1\n" in log.read_text()


def test_timeout_kills_the_script_and_its_children(backend: NodeBackend) -> None:
    b = backend
    d = _install(b, "slowos", 'sleep 600 & echo $! > "$DISK_0_PATH.child"; wait')
    disk = _disk(b, 0, b"\0" * MiB)
    spec = b.local_instance(_spec("slowos", [disk]))
    defn = bos.get_os(b, "slowos")
    assert defn.path == str(d)
    opts = runner.RunOptions(node="node1", log_dir=b.paths.log_dir, timeout=1.0)
    with pytest.raises(OpExecError, match="timed out after 1s"):
        asyncio.run(runner.create(defn, spec, {}, opts))
    child = int(Path(f"{spec.disks[0].path}.child").read_text())
    for _ in range(100):  # the kernel reaps the killed child
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"child {child} of the timed-out script still runs")


def test_validate_runs_verify_with_the_parameters(backend: NodeBackend) -> None:
    b = backend
    _install(
        b,
        "veros",
        "exit 0",
        '[ "$1" = parameters ] || exit 9\n'
        'case "$OSP_FLAVOUR" in bad) echo "Invalid value \'bad\' for flavour" >&2; exit 1;; esac',
    )
    ok = asyncio.run(
        bos.os_validate(b, t.OsValidateArgs(os_name="veros+default", osparams={"flavour": "x"}))
    )
    assert ok.definition is not None and ok.definition.name == "veros"
    with pytest.raises(ParameterError, match="Invalid value 'bad' for flavour"):
        asyncio.run(
            bos.os_validate(b, t.OsValidateArgs(os_name="veros", osparams={"flavour": "bad"}))
        )
    with pytest.raises(ParameterError, match="not a parameter of OS 'veros'"):
        asyncio.run(bos.os_validate(b, t.OsValidateArgs(os_name="veros", osparams={"x": "1"})))
    with pytest.raises(OpPrereqError, match="OS 'nope' not found on node node1"):
        asyncio.run(bos.os_validate(b, t.OsValidateArgs(os_name="nope")))
    absent = asyncio.run(bos.os_validate(b, t.OsValidateArgs(os_name="nope", required=False)))
    assert absent.definition is None

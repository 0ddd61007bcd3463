"""config.data: atomic storage, refusal of bad files, the group-committing writer."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.bootstrap import init_cluster
from corral.config import store
from corral.config import writer as writer_mod
from corral.config.writer import ConfigWriter
from corral.errors import ConfigError, ECode, OpPrereqError
from corral.objects import CONFIG_VERSION, NIC, Instance, Node
from corral.paths import Paths


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(tmp_path)
    init_cluster(p, "c1", node_name="node1")
    return p


@pytest.fixture
def cfg(paths: Paths) -> ConfigWriter:
    return ConfigWriter.load(paths.config_file)


def _instance(cfg: ConfigWriter, name: str, macs: tuple[str, ...] = ()) -> Instance:
    return Instance(
        name=name,
        primary_node=cfg.master_node.uuid,
        hypervisor="fake",
        nics=[NIC(mac=m) for m in macs],
    )


def _stray_files(directory: Path, keep: str = "config.data") -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


# --- save / load -----------------------------------------------------------------------------


def test_init_then_load(paths: Paths) -> None:
    data = store.load(paths.config_file)
    assert data.version == CONFIG_VERSION
    assert data.cluster.cluster_name == "c1"
    assert [n.name for n in data.nodes.values()] == ["node1"]
    assert data.cluster.master_node in data.nodes
    assert [g.name for g in data.nodegroups.values()] == ["default"]


def test_save_load_round_trip(paths: Paths, cfg: ConfigWriter) -> None:
    cfg.add_instance(_instance(cfg, "inst1", ("aa:00:00:00:00:01",)), [])
    cfg.data.cluster.tags = ["x", "y"]
    store.save(paths.config_file, cfg.data)
    back = store.load(paths.config_file)
    assert back == cfg.data
    assert store.encode(back) == store.encode(cfg.data)
    assert os.stat(paths.config_file).st_mode & 0o777 == 0o600


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="initialised") as ei:
        store.load(tmp_path / "config.data")
    assert ei.value.code is ECode.NOENT


def _bad_contents(good: bytes) -> dict[str, tuple[bytes, str]]:
    obj = json.loads(good)
    newer = {**obj, "version": CONFIG_VERSION + 1}
    no_version = {k: v for k, v in obj.items() if k != "version"}
    return {
        "corrupt": (good.replace(b":", b"=", 3), "corrupt"),
        "truncated": (good[: len(good) // 2], "truncated"),
        "empty": (b"", "empty"),
        "whitespace": (b"  \n", "empty"),
        "newer": (json.dumps(newer).encode(), "newer than this Corral"),
        "no_version": (json.dumps(no_version).encode(), "version"),
        "zero_version": (json.dumps({**obj, "version": 0}).encode(), "invalid version 0"),
        "string_version": (json.dumps({**obj, "version": "1"}).encode(), "version"),
        "no_cluster": (json.dumps({"version": CONFIG_VERSION}).encode(), "cluster"),
        "not_an_object": (b"[1, 2, 3]", "version"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "truncated",
        "empty",
        "whitespace",
        "newer",
        "no_version",
        "zero_version",
        "string_version",
        "no_cluster",
        "not_an_object",
    ],
)
def test_bad_file_is_refused_and_left_untouched(paths: Paths, case: str) -> None:
    content, fragment = _bad_contents(paths.config_file.read_bytes())[case]
    paths.config_file.write_bytes(content)
    before = os.stat(paths.config_file)
    with pytest.raises(ConfigError) as ei:
        store.load(paths.config_file)
    assert fragment in str(ei.value)
    assert str(paths.config_file) in str(ei.value)
    with pytest.raises(ConfigError):
        ConfigWriter.load(paths.config_file)
    assert paths.config_file.read_bytes() == content
    assert os.stat(paths.config_file).st_mtime_ns == before.st_mtime_ns
    assert _stray_files(paths.data_dir) == ["node-identity.json", "queue"]


def test_missing_version_says_so(paths: Paths) -> None:
    obj = json.loads(paths.config_file.read_bytes())
    del obj["version"]
    paths.config_file.write_text(json.dumps(obj))
    with pytest.raises(ConfigError) as ei:
        store.load(paths.config_file)
    assert "no valid version" in str(ei.value)
    assert "corrupt" not in str(ei.value)


def test_newer_version_is_refused_with_environment_error(paths: Paths) -> None:
    obj = json.loads(paths.config_file.read_bytes())
    obj["version"] = CONFIG_VERSION + 5
    obj["some_future_field"] = {"x": 1}
    paths.config_file.write_text(json.dumps(obj))
    with pytest.raises(ConfigError, match="upgrade Corral") as ei:
        store.load(paths.config_file)
    assert ei.value.code is ECode.ENVIRON
    assert f"version {CONFIG_VERSION + 5}" in str(ei.value)


# --- write_atomic -----------------------------------------------------------------------------


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "config.data"
    target.write_bytes(b"old")
    store.write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert _stray_files(tmp_path) == []
    store.write_atomic(tmp_path / "fresh", b"x" * 1_000_000, mode=0o640)
    assert (tmp_path / "fresh").read_bytes() == b"x" * 1_000_000
    assert os.stat(tmp_path / "fresh").st_mode & 0o777 == 0o640
    assert _stray_files(tmp_path, keep="fresh") == ["config.data"]


def test_crash_before_rename_keeps_old_config(
    paths: Paths, cfg: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = paths.config_file.read_bytes()
    cfg.add_instance(_instance(cfg, "inst1"), [])

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("corral.config.store.os.replace", boom)
    with pytest.raises(OSError):
        cfg.write_sync()
    monkeypatch.undo()
    assert paths.config_file.read_bytes() == old
    assert store.load(paths.config_file).instances == {}
    assert _stray_files(paths.data_dir) == ["node-identity.json", "queue"]
    assert cfg.dirty  # the change is not on disk


def test_crash_while_writing_keeps_old_config(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = paths.config_file.read_bytes()

    def boom(fd: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr("corral.config.store.os.fsync", boom)
    with pytest.raises(OSError):
        store.write_atomic(paths.config_file, b"{}")
    monkeypatch.undo()
    assert paths.config_file.read_bytes() == old
    assert _stray_files(paths.data_dir) == ["node-identity.json", "queue"]


# --- ConfigWriter: mutations --------------------------------------------------------------------


def test_update_with_stale_copy_is_refused(cfg: ConfigWriter) -> None:
    node = cfg.master_node
    a = cfg.copy(node)
    b = cfg.copy(node)
    a.drained = True
    cfg.update(a)
    serial = cfg.serial
    stored = cfg.master_node
    b.offline = True
    with pytest.raises(ConfigError) as ei:
        cfg.update(b)
    assert ei.value.code is ECode.STATE
    assert "concurrently" in str(ei.value)
    assert cfg.serial == serial
    assert cfg.master_node is stored
    assert cfg.master_node.offline is False
    assert cfg.master_node.drained is True


def test_update_of_removed_object(cfg: ConfigWriter) -> None:
    inst = _instance(cfg, "inst1")
    cfg.add_instance(inst, [])
    copy = cfg.copy(inst)
    cfg.remove_instance(inst.uuid)
    serial = cfg.serial
    with pytest.raises(ConfigError) as ei:
        cfg.update(copy)
    assert ei.value.code is ECode.NOENT
    assert cfg.serial == serial
    assert cfg.instance_by_name("inst1") is None


def test_update_bumps_object_and_cluster_serial(cfg: ConfigWriter) -> None:
    node = cfg.copy(cfg.master_node)
    obj_serial, cluster_serial = node.serial_no, cfg.serial
    cfg.update(node)
    assert cfg.master_node.serial_no == obj_serial + 1
    assert cfg.serial == cluster_serial + 1
    # The copy returned is the stored one: update it again without a stale error.
    cfg.update(cfg.copy(cfg.master_node))
    assert cfg.serial == cluster_serial + 2


def test_update_renames_are_reindexed(cfg: ConfigWriter) -> None:
    cfg.add_instance(_instance(cfg, "old"), [])
    inst = cfg.copy(cfg.expand_instance("old"))
    inst.name = "new"
    cfg.update(inst)
    assert cfg.instance_by_name("old") is None
    assert cfg.expand_instance("new").uuid == inst.uuid
    with pytest.raises(OpPrereqError) as ei:
        cfg.expand_instance("old")
    assert ei.value.code is ECode.NOENT


def test_update_cluster(cfg: ConfigWriter) -> None:
    c = cfg.copy(cfg.cluster)
    c.candidate_pool_size = 3
    serial = cfg.serial
    cfg.update(c)
    assert cfg.cluster.candidate_pool_size == 3
    assert cfg.serial == serial + 1
    stale = cfg.copy(c)
    stale.serial_no -= 1
    with pytest.raises(ConfigError):
        cfg.update(stale)


def test_every_mutation_bumps_the_cluster_serial(cfg: ConfigWriter) -> None:
    seen = [cfg.serial]

    def bumped() -> None:
        assert cfg.serial > seen[-1]
        seen.append(cfg.serial)

    inst = _instance(cfg, "inst1", ("aa:00:00:00:00:01",))
    cfg.add_instance(inst, [])
    bumped()
    cfg.update(cfg.copy(inst))
    bumped()
    cfg.remove_instance(inst.uuid)
    bumped()
    node = Node(name="node2", group=cfg.master_node.group)
    cfg.add_node(node)
    bumped()
    cfg.update(cfg.copy(cfg.node_group(node)))
    bumped()
    cfg.remove_node(node.uuid)
    bumped()
    cfg.update(cfg.copy(cfg.cluster))
    bumped()
    assert cfg.dirty


def test_duplicates_are_refused(cfg: ConfigWriter) -> None:
    cfg.add_instance(_instance(cfg, "inst1"), [])
    serial = cfg.serial
    with pytest.raises(OpPrereqError) as ei:
        cfg.add_instance(_instance(cfg, "inst1"), [])
    assert ei.value.code is ECode.EXISTS
    with pytest.raises(OpPrereqError):
        cfg.add_node(Node(name="node1", group=cfg.master_node.group))
    assert cfg.serial == serial


# --- ConfigWriter: commit ------------------------------------------------------------------------


def test_commit_writes_changes(paths: Paths, cfg: ConfigWriter) -> None:
    async def main() -> None:
        await cfg.commit()  # nothing to do
        assert cfg.write_count == 0
        cfg.add_instance(_instance(cfg, "inst1"), [])
        assert cfg.dirty
        await cfg.commit()
        assert not cfg.dirty

    asyncio.run(main())
    assert cfg.write_count == 1
    on_disk = store.load(paths.config_file)
    assert on_disk.serial_no == cfg.serial
    assert [i.name for i in on_disk.instances.values()] == ["inst1"]
    assert _stray_files(paths.data_dir) == ["node-identity.json", "queue"]


def test_group_commit(paths: Paths, cfg: ConfigWriter) -> None:
    n = 50
    written: list[int] = []
    cfg.listeners.append(lambda serial, blob: written.append(serial))

    async def job(i: int) -> None:
        await asyncio.sleep(0)
        c = cfg.copy(cfg.cluster)
        c.tags = [*c.tags, f"t{i}"]
        cfg.update(c)
        await cfg.commit()
        # When commit returns, this job's change is on disk.
        assert f"t{i}" in store.load(paths.config_file).cluster.tags

    async def main() -> None:
        await asyncio.gather(*(job(i) for i in range(n)))

    start = cfg.serial
    asyncio.run(main())
    assert cfg.serial == start + n
    assert 1 <= cfg.write_count < n
    assert written == sorted(written)
    assert written[-1] == cfg.serial
    on_disk = store.load(paths.config_file)
    assert on_disk.serial_no == cfg.serial
    assert sorted(on_disk.cluster.tags) == sorted(f"t{i}" for i in range(n))


def test_commit_failure_is_reported_to_every_waiter(
    paths: Paths, cfg: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = paths.config_file.read_bytes()

    def boom(path: Path, data: bytes, mode: int = 0o600) -> None:
        raise OSError(28, "No space left on device")

    async def main() -> list[BaseException | None]:
        cfg.add_instance(_instance(cfg, "inst1"), [])
        results = await asyncio.gather(cfg.commit(), cfg.commit(), return_exceptions=True)
        return list(results)

    monkeypatch.setattr(store, "write_atomic", boom)
    results = asyncio.run(main())
    assert all(isinstance(r, ConfigError) for r in results)
    assert "No space left" in str(results[0])
    assert cfg.dirty
    assert paths.config_file.read_bytes() == old
    monkeypatch.undo()
    asyncio.run(cfg.commit())  # a later commit retries and succeeds
    assert store.load(paths.config_file).serial_no == cfg.serial
    assert cfg.write_count == 1


# --- MAC addresses --------------------------------------------------------------------------------


class _FakeRandom:
    """Replaces ``random`` in the writer so MACs are predictable."""

    def __init__(self, values: Iterator[int]) -> None:
        self.values = values

    def randrange(self, n: int) -> int:
        return next(self.values) % n


def test_generate_mac_uses_the_cluster_prefix(cfg: ConfigWriter) -> None:
    c = cfg.copy(cfg.cluster)
    c.mac_prefix = "52:54:00"
    cfg.update(c)
    macs = {cfg.generate_mac() for _ in range(200)}
    assert len(macs) == 200  # reserved: never handed out twice
    for mac in macs:
        assert mac.startswith("52:54:00:")
        parts = mac.split(":")
        assert len(parts) == 6
        assert all(len(p) == 2 and int(p, 16) >= 0 for p in parts)
        assert mac == mac.lower()


def test_generate_mac_skips_used_and_reserved(
    cfg: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg.add_instance(_instance(cfg, "inst1", ("aa:00:00:00:00:01",)), [])
    cfg.reserve_mac("aa:00:00:00:00:02")
    seq = iter([0, 0, 1, 0, 0, 2, 0, 0, 1, 0, 0, 3])
    monkeypatch.setattr(writer_mod, "random", _FakeRandom(seq))
    assert cfg.generate_mac() == "aa:00:00:00:00:03"
    with pytest.raises(OpPrereqError) as ei:
        cfg.reserve_mac("aa:00:00:00:00:03")
    assert ei.value.code is ECode.EXISTS


def test_generate_mac_gives_up_when_exhausted(
    cfg: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg.add_instance(_instance(cfg, "inst1", ("aa:00:00:07:07:07",)), [])

    def sevens() -> Iterator[int]:
        while True:
            yield 7

    monkeypatch.setattr(writer_mod, "random", _FakeRandom(sevens()))
    with pytest.raises(OpPrereqError) as ei:
        cfg.generate_mac()
    assert ei.value.code is ECode.NORES


def test_removed_instance_frees_its_mac(cfg: ConfigWriter) -> None:
    inst = _instance(cfg, "inst1", ("aa:00:00:00:00:09",))
    cfg.add_instance(inst, [])
    assert cfg.mac_in_use("aa:00:00:00:00:09")
    cfg.remove_instance(inst.uuid)
    assert not cfg.mac_in_use("aa:00:00:00:00:09")
    cfg.reserve_mac("aa:00:00:00:00:09")
    assert cfg.mac_in_use("aa:00:00:00:00:09")

"""Opcodes: Ganeti's OP_ID tags, JSON round trips, validation errors."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from corral import opcodes
from corral.errors import ECode, ParameterError, ProtocolError
from corral.opcodes import (
    OP_CLASSES,
    PRIO_HIGHEST,
    PRIO_LOWEST,
    OpClusterQuery,
    OpInstanceCreate,
    OpInstanceRename,
    OpTagsGet,
    OpTestDelay,
)

# The smallest valid set of fields for each opcode (beyond OP_ID).
MINIMAL: dict[str, dict[str, Any]] = {
    "OP_CLUSTER_QUERY": {},
    "OP_CLUSTER_VERIFY": {},
    "OP_CLUSTER_DESTROY": {},
    "OP_CLUSTER_SET_PARAMS": {},
    "OP_CLUSTER_CLEANUP_STALE": {},
    "OP_CLUSTER_SYNC_OVN": {},
    "OP_TAGS_GET": {"kind": "cluster"},
    "OP_TAGS_SET": {"kind": "instance", "name": "inst1", "tags": ["a"]},
    "OP_TAGS_DEL": {"kind": "node", "name": "node1", "tags": ["b:c"]},
    "OP_NETWORK_ADD": {"network_name": "lan", "network": "198.51.100.0/24"},
    "OP_NETWORK_REMOVE": {"network_name": "lan"},
    "OP_NETWORK_SET_PARAMS": {"network_name": "lan", "gateway": "198.51.100.1"},
    "OP_NETWORK_CONNECT": {"network_name": "lan", "group_name": "default"},
    "OP_NETWORK_DISCONNECT": {"network_name": "lan", "group_name": "default"},
    "OP_TEST_DELAY": {"duration": 0.5},
    "OP_INSTANCE_CREATE": {"instance_name": "inst1"},
    "OP_INSTANCE_REMOVE": {"instance_name": "inst1"},
    "OP_INSTANCE_STARTUP": {"instance_name": "inst1"},
    "OP_INSTANCE_SHUTDOWN": {"instance_name": "inst1"},
    "OP_INSTANCE_REBOOT": {"instance_name": "inst1"},
    "OP_INSTANCE_RENAME": {"instance_name": "inst1", "new_name": "inst2"},
    "OP_INSTANCE_QUERY_DATA": {},
    "OP_INSTANCE_CONSOLE": {"instance_name": "i1"},
    "OP_INSTANCE_REINSTALL": {"instance_name": "inst1"},
    "OP_INSTANCE_SET_PARAMS": {"instance_name": "inst1"},
    "OP_INSTANCE_MIGRATE": {"instance_name": "inst1"},
    "OP_INSTANCE_FAILOVER": {"instance_name": "inst1"},
    "OP_NODE_MIGRATE": {"node_name": "node1"},
    "OP_NODE_EVACUATE": {"node_name": "node1"},
    "OP_INSTANCE_GROW_DISK": {"instance_name": "inst1", "disk": 0, "amount": 1024},
    "OP_OS_DIAGNOSE": {"output_fields": ["name", "variants"]},
    "OP_NODE_ADD": {"node_name": "node2", "primary_ip": "198.51.100.12"},
    "OP_NODE_REMOVE": {"node_name": "node2"},
    "OP_NODE_SET_PARAMS": {"node_name": "node2", "offline": True},
}


def _dec(obj: Any) -> opcodes.OpCode:
    return opcodes.decode(json.dumps(obj))


def _both(obj: Any) -> list[Any]:
    """Run through both entry points (JSON bytes and parsed JSON); return the outcomes."""
    out: list[Any] = []
    for fn in (_dec, opcodes.from_obj):
        try:
            out.append(fn(obj))
        except Exception as err:
            out.append(err)
    return out


# --- OP_ID -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "op_id"),
    [
        (OpInstanceCreate, "OP_INSTANCE_CREATE"),
        (OpClusterQuery, "OP_CLUSTER_QUERY"),
        (OpTestDelay, "OP_TEST_DELAY"),
        (OpTagsGet, "OP_TAGS_GET"),
        (opcodes.OpInstanceQueryData, "OP_INSTANCE_QUERY_DATA"),
        (opcodes.OpClusterSetParams, "OP_CLUSTER_SET_PARAMS"),
    ],
)
def test_op_id_follows_ganeti_naming(cls: type[opcodes.OpCode], op_id: str) -> None:
    assert OP_CLASSES[op_id] is cls
    op = cls(**MINIMAL[op_id])
    assert op.op_id == op_id
    assert json.loads(opcodes.encode(op))["OP_ID"] == op_id


def test_op_classes_registry_is_complete_and_consistent() -> None:
    assert set(MINIMAL) == set(OP_CLASSES), "add the new opcode to MINIMAL"
    for op_id, cls in OP_CLASSES.items():
        assert cls.__name__.startswith("Op")
        assert cls(**MINIMAL[op_id]).op_id == op_id


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("op_id", sorted(OP_CLASSES))
def test_round_trip_every_opcode(op_id: str) -> None:
    cls = OP_CLASSES[op_id]
    op = cls(**MINIMAL[op_id])
    wire = opcodes.encode(op)
    assert json.loads(wire)["OP_ID"] == op_id
    back = opcodes.decode(wire)
    assert type(back) is cls
    assert back == op
    assert opcodes.from_obj(opcodes.to_obj(op)) == op
    # A client that sends only the required fields gets the same opcode.
    assert _dec({"OP_ID": op_id, **MINIMAL[op_id]}) == op


@pytest.mark.parametrize("op_id", sorted(OP_CLASSES))
def test_every_opcode_has_dry_run_and_generic_fields(op_id: str) -> None:
    cls = OP_CLASSES[op_id]
    assert cls(**MINIMAL[op_id]).dry_run is False
    op = _dec({"OP_ID": op_id, **MINIMAL[op_id], "dry_run": True, "priority": -5})
    assert op.dry_run is True
    assert op.priority == -5
    obj = opcodes.to_obj(op)
    for generic in ("dry_run", "debug_level", "priority", "depends", "comment", "reason"):
        assert generic in obj


def test_round_trip_full_instance_create() -> None:
    op = OpInstanceCreate(
        instance_name="web1.example.com",
        disk_template="file",
        disks=[opcodes.DiskDef(size=1024), opcodes.DiskDef(size=10, mode="ro", name="d1")],
        nics=[opcodes.NicDef(mac="aa:00:00:01:02:03", ip="10.0.0.1", link="br0")],
        beparams={"memory": "512M"},
        hvparams={"kernel_path": "/boot/vmlinuz"},
        tags=["role:web"],
        depends=[(-1, ["success", "error"])],
        reason=[("gnt:client", "because", 1.5)],
        comment="hello",
        priority=PRIO_HIGHEST,
        dry_run=True,
    )
    back = opcodes.decode(opcodes.encode(op))
    assert back == op
    assert isinstance(back, OpInstanceCreate)
    assert back.disks[1].mode == "ro"
    assert back.depends == [(-1, ["success", "error"])]


# --- summary --------------------------------------------------------------------------------------


def test_summary_formats() -> None:
    assert OpInstanceCreate(instance_name="inst1").summary() == "INSTANCE_CREATE(inst1)"
    assert OpInstanceRename(instance_name="a", new_name="b").summary() == "INSTANCE_RENAME(a)"
    assert OpClusterQuery().summary() == "CLUSTER_QUERY"
    assert OpTestDelay(duration=1.5).summary() == "TEST_DELAY(1.5)"
    # A summary field that is not set falls back to the bare name.
    assert OpTagsGet(kind="cluster").summary() == "TAGS_GET"
    assert OpTagsGet(kind="node", name="node1").summary() == "TAGS_GET(node1)"


# --- validation errors ----------------------------------------------------------------------------


def _err(obj: Any) -> ParameterError:
    """Both entry points must raise the same ParameterError (ECODE_INVAL); return one."""
    outcomes = _both(obj)
    for e in outcomes:
        assert isinstance(e, ParameterError), f"expected ParameterError, got {e!r}"
        assert e.code is ECode.INVAL
    assert outcomes[0].field == outcomes[1].field
    err: ParameterError = outcomes[0]
    return err


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"disks": [{"size": 0}]}, "disks[0].size"),
        ({"disks": [{"size": 1}, {"size": -5}]}, "disks[1].size"),
        ({"disks": [{"size": "1G"}]}, "disks[0].size"),
        ({"disks": [{"size": 1024**3 + 1}]}, "disks[0].size"),
        ({"disks": [{"size": 1, "mode": "rx"}]}, "disks[0].mode"),
        ({"nics": [{"mac": "zz:zz"}]}, "nics[0].mac"),
        ({"nics": [{}, {"mac": "aa:bb:cc:dd:ee"}]}, "nics[1].mac"),
        ({"nics": [{"ip": "not-an-ip"}]}, "nics[0].ip"),
        ({"tags": ["ok", "has space"]}, "tags[1]"),
        ({"mode": "clone"}, "mode"),
        ({"start": "yes"}, "start"),
    ],
)
def test_validation_error_names_the_field(extra: dict[str, Any], field: str) -> None:
    err = _err({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "inst1", **extra})
    assert err.field == field
    assert str(err).startswith(f"{field}: ")


def test_bad_mac_message_is_friendly() -> None:
    err = _err({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i", "nics": [{"mac": "zz"}]})
    assert "not a valid MAC address" in str(err)


@pytest.mark.parametrize("name", ["-bad", "bad_name", "", "a" * 64, "a..b", "x y"])
def test_bad_instance_name(name: str) -> None:
    err = _err({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": name})
    assert err.field == "instance_name"
    assert "not a valid name" in str(err)


def test_missing_required_field_is_named() -> None:
    err = _err({"OP_ID": "OP_INSTANCE_CREATE"})
    assert err.field == "instance_name"
    err = _err({"OP_ID": "OP_INSTANCE_RENAME", "instance_name": "a"})
    assert err.field == "new_name"
    err = _err({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "a", "disks": [{"mode": "rw"}]})
    assert err.field == "disks[0].size"


def test_unknown_field() -> None:
    err = _err({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "inst1", "bogus": 1})
    assert err.field == "bogus"
    assert "unknown field" in str(err)
    err = _err({"OP_ID": "OP_INSTANCE_CREATE", "instance_name": "i", "nics": [{"bogus": 1}]})
    assert err.field == "nics[0].bogus"


def test_unknown_op_id() -> None:
    err = _err({"OP_ID": "OP_NO_SUCH_THING"})
    assert err.field == "OP_ID"
    assert "unknown opcode" in str(err)
    assert "OP_NO_SUCH_THING" in str(err)


def test_missing_op_id() -> None:
    err = _err({"instance_name": "inst1"})
    assert err.field == "OP_ID"


def test_not_an_object() -> None:
    for e in _both([1, 2]):
        assert isinstance(e, ParameterError)
        assert e.code is ECode.INVAL


def test_malformed_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        opcodes.decode(b'{"OP_ID": "OP_CLUSTER_QUERY"')


@pytest.mark.parametrize("prio", [PRIO_HIGHEST, -1, 0, 10, PRIO_LOWEST])
def test_priority_in_bounds(prio: int) -> None:
    assert _dec({"OP_ID": "OP_CLUSTER_QUERY", "priority": prio}).priority == prio


@pytest.mark.parametrize("prio", [PRIO_HIGHEST - 1, PRIO_LOWEST + 1, 1000, "high", 1.5])
def test_priority_out_of_bounds(prio: Any) -> None:
    err = _err({"OP_ID": "OP_CLUSTER_QUERY", "priority": prio})
    assert err.field == "priority"


def test_opcodes_are_immutable() -> None:
    op = OpInstanceCreate(instance_name="inst1")
    with pytest.raises(AttributeError):
        op.instance_name = "other"  # type: ignore[misc]
    assert msgspec.structs.replace(op, dry_run=True).dry_run is True


def test_test_delay_duration_bounds() -> None:
    assert _err({"OP_ID": "OP_TEST_DELAY", "duration": -1}).field == "duration"
    assert _err({"OP_ID": "OP_TEST_DELAY", "duration": 8 * 86400}).field == "duration"

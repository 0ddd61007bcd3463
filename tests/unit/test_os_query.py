"""The OS query: per-node diagnoses merged per OS, Ganeti's validity rules and filters."""

from __future__ import annotations

import pytest

from corral.errors import OpPrereqError
from corral.query import os as os_query
from corral.rpc.client import RpcResult
from corral.rpc.types import OsDefinition, OsDiagnoseResult, OsParameter


def d(name: str, path: str = "/srv/corral/os", valid: bool = True, **kw: object) -> OsDefinition:
    base: dict[str, object] = {
        "name": name,
        "path": f"{path}/{name}",
        "valid": valid,
        "api_versions": [20],
        "diagnose": "" if valid else "File 'verify' under path is missing",
    }
    base.update(kw)
    return OsDefinition(**base)  # type: ignore[arg-type]


def ok(node: str, *oses: OsDefinition) -> RpcResult[OsDiagnoseResult]:
    return RpcResult(node, "os_diagnose", payload=OsDiagnoseResult(oses=list(oses)))


def test_valid_only_when_the_active_definition_is_valid_on_every_node() -> None:
    results = {
        "node1": ok("node1", d("a"), d("b"), d("c", valid=False), d("shadow")),
        "node2": ok(
            "node2",
            d("a"),
            d("c"),
            d("shadow", valid=False),
            d("shadow", path="/usr/share/ganeti/os"),
        ),
        "node3": RpcResult("node3", "os_diagnose", fail_msg="connection refused"),
    }
    infos = os_query.merge(results)
    assert {n: i.valid for n, i in infos.items()} == {
        "a": True,
        "b": False,  # missing on node2
        "c": False,  # broken on node1
        "shadow": False,  # the definition that takes effect on node2 is broken
    }
    # A node that did not answer is left out, not counted as missing everything.
    assert set(infos["a"].node_status) == {"node1", "node2"}
    assert infos["b"].node_status["node2"] == []
    assert len(infos["shadow"].node_status["node2"]) == 2


def test_variants_parameters_and_apis_are_what_all_nodes_agree_on() -> None:
    p = [OsParameter(name="size", description="Size"), OsParameter(name="flavour")]
    results = {
        "node1": ok("node1", d("t", variants=["default", "alt", "x"], parameters=p)),
        "node2": ok(
            "node2",
            d("t", variants=["alt", "default"], parameters=p[:1], api_versions=[20, 15]),
        ),
    }
    info = os_query.merge(results)["t"]
    assert info.variants == ["default", "alt"]  # in the first node's order
    assert info.parameters == p[:1]
    assert info.api_versions == [20]


def test_rows_hide_invalid_oses_unless_validity_is_asked_for() -> None:
    infos = os_query.merge(
        {"node1": ok("node1", d("noop"), d("broken", valid=False), d("deb", variants=["b", "a"]))}
    )
    assert os_query.rows(infos, ["name", "variants"], []) == [["deb", ["b", "a"]], ["noop", []]]
    assert os_query.rows(infos, ["name", "valid"], []) == [
        ["broken", False],
        ["deb", True],
        ["noop", True],
    ]
    assert os_query.rows(infos, ["node_status"], ["broken"]) == []  # invalid: hidden
    ((valid, status),) = os_query.rows(infos, ["valid", "node_status"], ["broken"])
    assert valid is False
    assert status["node1"][0][1:3] == [False, "File 'verify' under path is missing"]


def test_node_status_entries_are_ganetis_tuples() -> None:
    infos = os_query.merge(
        {
            "node1": ok(
                "node1",
                d("t", variants=["v"], parameters=[OsParameter(name="p", description="P")]),
            )
        }
    )
    ((status,),) = os_query.rows(infos, ["node_status"], [])
    assert status == {"node1": [["/srv/corral/os/t", True, "", ["v"], [["p", "P"]], [20]]]}


def test_unknown_names_are_an_error() -> None:
    infos = os_query.merge({"node1": ok("node1", d("a"))})
    with pytest.raises(OpPrereqError, match="unknown OS\\(es\\): zz"):
        os_query.rows(infos, ["name"], ["a", "zz"])

"""The kvm-ifdown contract's pure parts: environment, contexts, who owns a tap name."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import ECode, HypervisorError
from corral.hypervisor.kvm.files import KvmFiles
from corral.network import ifup, nicfiles
from corral.network.nicenv import (
    IFDOWN_CONTEXTS,
    ifdown_context,
    ifdown_env,
    ifup_env,
)
from corral.params import NicParams
from corral.paths import Paths
from corral.rpc.types import NicSpec

UUID = "5f2b0c3e-1111-2222-3333-444455556666"
OTHER = "0d9e8f7a-aaaa-bbbb-cccc-ddddeeeeffff"

NICS = {
    "bridged": NicSpec(
        uuid=UUID, index=0, mac="aa:00:00:11:22:33", nicparams=NicParams(link="br0")
    ),
    "routed-full": NicSpec(
        uuid=UUID,
        name="front",
        index=2,
        mac="aa:00:00:11:22:34",
        ip="198.51.100.7",
        nicparams=NicParams(mode="routed", link="100", vlan=""),
        network={"NETWORK_NAME": "net1", "NETWORK_SUBNET": "198.51.100.0/24"},
    ),
}


@pytest.mark.parametrize("kind", sorted(NICS))
def test_ifdown_env_is_ifup_env_without_tags(kind: str) -> None:
    nic = NICS[kind]
    up = ifup_env("inst1", ["web", "prod"], nic, "tap4", search_path="/bin")
    down = ifdown_env("inst1", nic, "tap4", search_path="/bin")
    assert "TAGS" not in down
    assert down == {k: v for k, v in up.items() if k != "TAGS"}
    assert down["INTERFACE"] == "tap4" and down["INTERFACE_UUID"] == UUID


def test_contexts_and_the_old_alias() -> None:
    assert IFDOWN_CONTEXTS == ("shutdown", "migrate-source", "migrate-failed", "hot-remove")
    for ctx in IFDOWN_CONTEXTS:
        assert ifdown_context(ctx) == ctx
    assert ifdown_context("migrate-success") == "migrate-source"
    with pytest.raises(HypervisorError) as err:
        ifdown_context("reboot")
    assert err.value.code == ECode.INVAL
    assert "unknown context 'reboot'" in err.value.message


def test_script_finds_the_nic_dir_the_driver_writes(tmp_path: Path) -> None:
    assert Path(ifup.nic_dir({"CORRAL_ROOT": str(tmp_path)})) == KvmFiles(Paths(tmp_path)).nic_dir


def test_owners_and_claimed_elsewhere(tmp_path: Path) -> None:
    base = KvmFiles(Paths(tmp_path)).nic_dir
    nicfiles.write_tap(base, "inst1", UUID, 0, "tap3")
    env = {"CORRAL_ROOT": str(tmp_path), "INSTANCE": "inst1", "INTERFACE_UUID": UUID}
    assert nicfiles.owners(base, "tap3") == [nicfiles.TapOwner("inst1", UUID)]
    assert not ifup.claimed_elsewhere(env, "tap3")  # only our own record names it

    # The kernel gave the name to a NIC of another instance; its record names it too.
    nicfiles.write_tap(base, "inst2", OTHER, 0, "tap3")
    assert sorted(o.instance for o in nicfiles.owners(base, "tap3")) == ["inst1", "inst2"]
    assert ifup.claimed_elsewhere(env, "tap3")
    # Another NIC of the same instance counts as well; no record: nobody's.
    nicfiles.remove_tap(base, "inst1", UUID)
    assert ifup.claimed_elsewhere({**env, "INSTANCE": "inst2"}, "tap3")
    assert nicfiles.owners(base, "tap9") == []
    assert nicfiles.instances(base) == ["inst1", "inst2"]
    assert nicfiles.owners(tmp_path / "nowhere", "tap3") == []

"""The OVSDB clients (node Open_vSwitch, OVN NB, OVN SB) against real ovsdb-servers.

Each test starts throw-away ``ovsdb-server``s on unix sockets in its own temp
dir (killed by PID afterwards); nothing listens on TCP in the host's
namespace. The end-to-end test runs ``ovsdb-server`` and ``ovs-vswitchd``
(userspace datapath) inside a network namespace it creates, with a real tap.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import CorralError, ECode, HypervisorError, ParameterError
from corral.network import ovs, ovsdb, ovsnic
from corral.network.nicenv import NicEnv
from corral.network.ovn_nb import NbClient, OvnError, PortSpec
from corral.network.ovn_sb import BindingWatcher, port_binding
from tests.ovsdbtools import NB_SCHEMA, SB_SCHEMA, VSWITCH_SCHEMA, Servers, ovsdb_servers

pytestmark = [
    pytest.mark.skipif(
        shutil.which("ovsdb-server") is None or shutil.which("ovsdb-tool") is None,
        reason="needs openvswitch-switch (ovsdb-server, ovsdb-tool)",
    ),
    pytest.mark.timeout(120),
]

VS_TABLES = ["Open_vSwitch", "Bridge", "Port", "Interface"]
NET = "0b8e1f52-6d4a-4c1e-9a57-3f0c2d8e7a10"
NET2 = "0b8e1f52-6d4a-4c1e-9a57-3f0c2d8e7a11"
NIC = "5f2b0c3e-1111-2222-3333-444455556666"
NIC2 = "5f2b0c3e-1111-2222-3333-444455557777"
MAC = "aa:00:00:00:00:01"


@pytest.fixture
def servers() -> Iterator[Servers]:
    with ovsdb_servers() as s:
        yield s


def _add_bridges(sock: Path, *names: str, datapath_type: str = "") -> None:
    """The Open_vSwitch root row and bridges, as a chassis set-up would make them."""
    api = ovsdb.open_db(str(sock), "Open_vSwitch", VS_TABLES).api
    with api.transaction(check_error=True) as txn:
        bridges = [
            txn.add(api.db_create("Bridge", name=n, datapath_type=datapath_type)) for n in names
        ]
        txn.add(api.db_create("Open_vSwitch", bridges=bridges))


@pytest.fixture
def vswitch(servers: Servers) -> str:
    """A node's Open_vSwitch database with bridges br0 and br1 (no vswitchd)."""
    s = servers.start(VSWITCH_SCHEMA, "conf")
    _add_bridges(s.sock, "br0", "br1")
    return str(s.sock)


def _plug(db: str, tap: str, iface_id: str | None = NIC, **kw: Any) -> None:
    kw.setdefault("bridge", "br0")
    bridge = kw.pop("bridge")
    ovs.plug_port(
        db, bridge, tap, iface_id=iface_id, mac=MAC, vm="inst1", prepare_tap=False, wait=False, **kw
    )


def _interface_count(db: str) -> int:
    d = ovsdb.open_db(db, "Open_vSwitch", VS_TABLES)
    with d.conn.lock:
        return len(d.idl.tables["Interface"].rows)


# --- node side: Open_vSwitch ------------------------------------------------------------


def test_plug_is_idempotent_and_unplug_removes_port_and_interface(vswitch: str) -> None:
    _plug(vswitch, "tap0")
    _plug(vswitch, "tap0")
    info = ovs.port_info(vswitch, "tap0")
    assert info is not None
    assert info.bridge == "br0"
    assert info.external_ids == {
        "iface-id": NIC,
        "attached-mac": MAC,
        "iface-status": "active",
        "vm-uuid": "inst1",
    }
    assert (info.tag, info.trunks, info.vlan_mode) == (None, (), None)
    assert _interface_count(vswitch) == 1
    assert ovs.port_of(vswitch, NIC) == "tap0"
    assert ovs.bridge_exists(vswitch, "br0") and not ovs.bridge_exists(vswitch, "br9")

    assert ovs.unplug_port(vswitch, "tap0", only_if_iface_id=NIC) is True
    assert ovs.unplug_port(vswitch, "tap0", only_if_iface_id=NIC) is False
    assert ovs.port_info(vswitch, "tap0") is None
    assert ovs.port_of(vswitch, NIC) is None
    assert _interface_count(vswitch) == 0


def test_replug_on_another_bridge_moves_the_port(vswitch: str) -> None:
    _plug(vswitch, "tap0", bridge="br0")
    _plug(vswitch, "tap0", bridge="br1")
    info = ovs.port_info(vswitch, "tap0")
    assert info is not None and info.bridge == "br1"
    d = ovsdb.open_db(vswitch, "Open_vSwitch", VS_TABLES)
    with d.conn.lock:
        ports = {
            str(b.name): sorted(str(p.name) for p in b.ports)
            for b in d.idl.tables["Bridge"].rows.values()
        }
    assert ports == {"br0": [], "br1": ["tap0"]}


def test_unplug_only_removes_a_port_that_is_still_ours(vswitch: str) -> None:
    _plug(vswitch, "tap0", iface_id=NIC)
    # ovn-controller's own key survives a re-plug by the same NIC ...
    api = ovsdb.open_db(vswitch, "Open_vSwitch", VS_TABLES).api
    api.db_set("Interface", "tap0", ("external_ids", {"ovn-installed": "true"})).execute(
        check_error=True
    )
    _plug(vswitch, "tap0", iface_id=NIC)
    info = ovs.port_info(vswitch, "tap0")
    assert info is not None and info.external_ids.get("ovn-installed") == "true"

    # ... not one by another NIC that got the same tap name.
    _plug(vswitch, "tap0", iface_id=NIC2)
    info = ovs.port_info(vswitch, "tap0")
    assert info is not None
    assert info.external_ids["iface-id"] == NIC2
    assert "ovn-installed" not in info.external_ids

    # The late kvm-ifdown of the first NIC leaves the new owner's port alone.
    assert ovs.unplug_port(vswitch, "tap0", only_if_iface_id=NIC) is False
    assert ovs.port_info(vswitch, "tap0") is not None
    assert ovs.unplug_port(vswitch, "tap0", only_if_iface_id=NIC2) is True
    assert ovs.port_info(vswitch, "tap0") is None


@pytest.mark.parametrize(
    ("vlan", "expected"),
    [
        (".10", (10, (), None)),
        ("10", (10, (), None)),
        (":20:30", (None, (20, 30), None)),
        (".10:20:30", (10, (20, 30), "native-untagged")),
    ],
)
def test_openvswitch_vlans(
    vswitch: str, vlan: str, expected: tuple[int | None, tuple[int, ...], str | None]
) -> None:
    nic = NicEnv(interface="tap0", mode="openvswitch", link="br0", vlan=vlan, instance="inst1")
    plan = ovsnic.plan(nic, {"INTERFACE_UUID": NIC, "MAC": MAC.upper()})
    assert plan.mac == MAC
    _plug(vswitch, "tap0", vlan=plan.vlan, trunks=plan.trunks)
    info = ovs.port_info(vswitch, "tap0")
    assert info is not None
    assert (info.tag, info.trunks, info.vlan_mode) == expected
    # The same tap re-plugged without VLAN (NIC modified) loses all of it.
    _plug(vswitch, "tap0")
    info = ovs.port_info(vswitch, "tap0")
    assert info is not None
    assert (info.tag, info.trunks, info.vlan_mode) == (None, (), None)


def test_nic_plans(tmp_path: Path) -> None:
    env = {"INTERFACE_UUID": NIC, "MAC": MAC, "CORRAL_ROOT": str(tmp_path)}
    plan = ovsnic.plan(NicEnv(interface="tap0", mode="ovn", instance="inst1"), env)
    assert plan.bridge == "br-int"
    assert plan.iface_id == NIC
    assert plan.db == str(tmp_path / "run/openvswitch/db.sock")
    assert plan.vm == "inst1"
    assert ovsnic.plan(NicEnv(interface="tap0", mode="ovn", link="br-x"), env).bridge == "br-x"

    with pytest.raises(HypervisorError, match="VLAN") as err:
        ovsnic.plan(NicEnv(interface="tap0", mode="ovn", vlan=".10"), env)
    assert err.value.code is ECode.INVAL
    with pytest.raises(HypervisorError, match="INTERFACE_UUID") as err:
        ovsnic.plan(NicEnv(interface="tap0", mode="ovn"), {"MAC": MAC})
    assert err.value.code is ECode.INVAL
    with pytest.raises(HypervisorError, match="LINK is empty") as err:
        ovsnic.plan(NicEnv(interface="tap0", mode="openvswitch"), env)
    assert err.value.code is ECode.INVAL


def test_node_side_errors(vswitch: str, servers: Servers) -> None:
    with pytest.raises(HypervisorError, match="bridge br9 does not exist") as err:
        _plug(vswitch, "tap0", bridge="br9")
    assert err.value.code is ECode.ENVIRON
    with pytest.raises(HypervisorError, match="4095") as err:
        _plug(vswitch, "tap0", vlan=4095)
    assert err.value.code is ECode.INVAL
    with pytest.raises(HypervisorError, match="tap name") as err:
        _plug(vswitch, "a-name-far-too-long-for-linux")
    assert err.value.code is ECode.INVAL
    assert ovs.port_info(vswitch, "tap0") is None

    missing = servers.dir / "none/db.sock"
    started = time.monotonic()
    with pytest.raises(HypervisorError, match=f"{missing} does not exist") as err:
        _plug(str(missing), "tap0")
    assert err.value.code is ECode.ENVIRON
    assert time.monotonic() - started < 2  # fails at once, without a connect timeout
    # Without OVS there is no port to remove: ifdown is a no-op.
    assert ovs.unplug_port(str(missing), "tap0", only_if_iface_id=NIC) is False

    with pytest.raises(HypervisorError, match="Invalid OVSDB remote") as err:
        ovs.bridge_exists("http://x", "br0")
    assert err.value.code is ECode.INVAL


def test_ovsdb_restart_reconnects(servers: Servers) -> None:
    s = servers.start(VSWITCH_SCHEMA, "conf")
    _add_bridges(s.sock, "br0")
    db = str(s.sock)
    _plug(db, "tap0")
    servers.stop(s)
    with pytest.raises(HypervisorError, match=f"OVSDB at unix:{db}") as err:
        _plug(db, "tap1")
    assert err.value.code is ECode.ENVIRON
    s.sock.unlink(missing_ok=True)  # a killed server leaves its socket behind
    servers.start(VSWITCH_SCHEMA, "conf", db_file=s.db_file, sock=s.sock)
    _plug(db, "tap1")  # same process, the cached connection is replaced
    assert ovs.port_of(db, NIC) in ("tap0", "tap1")
    assert ovs.port_info(db, "tap1") is not None


def test_plug_waits_for_vswitchd_and_undoes_on_timeout(
    vswitch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ovs, "VSWITCHD_TIMEOUT", 0.3)
    with pytest.raises(HypervisorError, match="is ovs-vswitchd running") as err:
        ovs.plug_port(vswitch, "br0", "tap0", iface_id=NIC, mac=MAC, vm="i", prepare_tap=False)
    assert err.value.code is ECode.ENVIRON
    assert ovs.port_info(vswitch, "tap0") is None


# --- master side: OVN northbound ---------------------------------------------------------


@pytest.fixture
def nb(servers: Servers) -> NbClient:
    return NbClient(servers.start(NB_SCHEMA, "nb").remote)


def _spec(**kw: Any) -> PortSpec:
    base: dict[str, Any] = {
        "name": NIC,
        "mac": MAC,
        "ip": "198.51.100.10",
        "instance": "inst1",
        "chassis": "node1",
    }
    base.update(kw)
    return PortSpec(**base)


def test_nb_switch_lifecycle(nb: NbClient) -> None:
    assert nb.ensure_switch("net1", NET) is True
    assert nb.ensure_switch("net1", NET) is False
    assert nb.switch_network("net1") == NET
    with pytest.raises(OvnError, match="belongs to network") as err:
        nb.ensure_switch("net1", NET2)
    assert err.value.code is ECode.EXISTS

    nb.ensure_port("net1", _spec())
    with pytest.raises(OvnError, match="still has 1 port") as err:
        nb.delete_switch("net1")
    assert err.value.code is ECode.STATE
    assert nb.delete_port(NIC) is True
    assert nb.delete_switch("net1", network_uuid=NET2) is False  # not that network's
    assert nb.delete_switch("net1") is True
    assert nb.delete_switch("net1") is False
    assert nb.switch_network("net1") is None


def test_nb_adopts_an_admin_made_switch(nb: NbClient) -> None:
    db = ovsdb.open_db(nb.remote, "OVN_Northbound", ["Logical_Switch", "Logical_Switch_Port"])
    db.api.db_create("Logical_Switch", name="admin-ls").execute(check_error=True)
    assert nb.ensure_switch("admin-ls", NET) is False
    assert nb.switch_network("admin-ls") == NET


def test_nb_port_lifecycle(nb: NbClient) -> None:
    nb.ensure_switch("net1", NET)
    nb.ensure_switch("net2", NET2)
    with pytest.raises(OvnError, match="net9 does not exist") as err:
        nb.ensure_port("net9", _spec())
    assert err.value.code is ECode.NOENT

    assert nb.ensure_port("net1", _spec()) is True
    port = nb.get_port(NIC)
    assert port is not None
    assert port.switch == "net1"
    assert port.addresses == (f"{MAC} 198.51.100.10",)
    assert port.requested_chassis == ("node1",)
    assert port.activation_strategy == ()
    assert dict(port.external_ids) == {"corral-instance": "inst1"}
    assert dict(port.options) == {"requested-chassis": "node1"}
    assert port.instance == "inst1" and not port.migrating

    # Idempotent; then an update (IP removed, instance renamed, new primary)
    # and a move to another network's switch.
    assert nb.ensure_port("net1", _spec()) is False
    assert nb.ensure_port("net2", _spec(ip=None, instance="inst2", chassis="node3")) is False
    port = nb.get_port(NIC)
    assert port is not None
    assert port.switch == "net2"
    assert port.addresses == (MAC,)
    assert port.instance == "inst2"
    assert port.requested_chassis == ("node3",)

    nb.ensure_port("net1", _spec(name=NIC2, ip="2001:db8::5"))
    assert [p.name for p in nb.list_ports({"corral-instance": "inst1"})] == [NIC2]
    assert [p.name for p in nb.ports_with_key("corral-instance")] == [NIC, NIC2]

    assert nb.delete_port(NIC) is True
    assert nb.delete_port(NIC) is False
    assert nb.get_port(NIC) is None


def test_nb_migration_options(nb: NbClient) -> None:
    nb.ensure_switch("net1", NET)
    nb.ensure_port("net1", _spec(chassis="node1"))

    nb.begin_migration(NIC, "node1", "node2")
    nb.begin_migration(NIC, "node1", "node2")  # repeated after a crash: same result
    port = nb.get_port(NIC)
    assert port is not None
    assert dict(port.options) == {"requested-chassis": "node1,node2", "activation-strategy": "rarp"}
    assert port.requested_chassis == ("node1", "node2") and port.migrating

    nb.finish_migration(NIC, "node2")
    port = nb.get_port(NIC)
    assert port is not None
    assert dict(port.options) == {"requested-chassis": "node2"}

    nb.begin_migration(NIC, "node2", "node1")
    nb.revert_migration(NIC, "node2")
    port = nb.get_port(NIC)
    assert port is not None
    assert dict(port.options) == {"requested-chassis": "node2"}

    # ensure_port (the watcher's repair) also settles a half-done migration.
    nb.begin_migration(NIC, "node2", "node1")
    nb.ensure_port("net1", _spec(chassis="node2"))
    port = nb.get_port(NIC)
    assert port is not None
    assert dict(port.options) == {"requested-chassis": "node2"}

    with pytest.raises(OvnError, match="does not exist") as err:
        nb.begin_migration(NIC2, "node1", "node2")
    assert err.value.code is ECode.NOENT


def test_begin_migration_is_one_transaction(nb: NbClient) -> None:
    """ovn-northd must never see the second chassis without the activation strategy."""
    from ovsdbapp.backend.ovs_idl import connection  # type: ignore[import-untyped]

    nb.ensure_switch("net1", NET)
    nb.ensure_port("net1", _spec(chassis="node1"))
    seen: list[dict[str, str]] = []

    class Recorder(connection.OvsdbIdl):  # type: ignore[misc]
        def notify(self, event: str, row: Any, updates: Any = None) -> None:
            if row._table.name == "Logical_Switch_Port":
                seen.append(dict(row.options))

    db = ovsdb.connect_db(
        nb.remote,
        "OVN_Northbound",
        ["Logical_Switch_Port"],
        5.0,
        OvnError,
        idl_class=Recorder,
    )
    seen.clear()  # the initial dump
    try:
        nb.begin_migration(NIC, "node1", "node2")
        nb.finish_migration(NIC, "node2")
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        db.close()
    assert seen == [
        {"requested-chassis": "node1,node2", "activation-strategy": "rarp"},
        {"requested-chassis": "node2"},
    ]


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda nb: nb.get_port("not-a-uuid"), "name"),
        (lambda nb: nb.ensure_switch("bad name", NET), "ovn_switch"),
        (lambda nb: nb.ensure_port("net1", _spec(mac="aa:bb")), "mac"),
        (lambda nb: nb.ensure_port("net1", _spec(ip="198.51.100.300")), "ip"),
        (lambda nb: nb.begin_migration(NIC, "node1", "node1"), "target"),
        (lambda nb: nb.begin_migration(NIC, "node1", "node2,node3"), "target"),
    ],
)
def test_nb_bad_input(nb: NbClient, call: Callable[[NbClient], Any], field: str) -> None:
    with pytest.raises(ParameterError) as err:
        call(nb)
    assert err.value.code is ECode.INVAL
    assert err.value.field == field


def test_nb_unreachable(servers: Servers) -> None:
    missing = servers.dir / "nb-missing.sock"
    with pytest.raises(OvnError, match=f"OVSDB at unix:{missing}") as err:
        NbClient(str(missing)).get_port(NIC)
    assert err.value.code is ECode.ENVIRON
    assert isinstance(err.value, CorralError)

    sb = servers.start(SB_SCHEMA, "sb")
    with pytest.raises(OvnError, match="has no database OVN_Northbound") as err:
        NbClient(sb.remote).connect()
    assert err.value.code is ECode.ENVIRON

    with pytest.raises(OvnError, match="Invalid OVSDB remote") as err:
        NbClient("198.51.100.1:6641")
    assert err.value.code is ECode.INVAL

    # Something else listens there (a typo'd port): said so, not a hang.
    other = servers.dir / "http.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(other))
        listener.listen(1)

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        with pytest.raises(OvnError, match="does not speak OVSDB") as err:
            NbClient(str(other), timeout=2).connect()
        t.join(5)
    assert err.value.code is ECode.ENVIRON


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace")
def test_nb_tcp_remote_that_never_answers_times_out(servers: Servers) -> None:
    """A TCP remote that never answers: the connect gives up after the timeout."""
    from corral.vcluster import net

    ns = f"{servers.prefix}-nb"
    net.create_ns(ns)
    try:
        # A veth whose peer has no address: ARP for the remote goes unanswered.
        with net.ipr(ns) as r:
            r.link("add", ifname="v0", kind="veth", peer="v1")
            idx = r.link_lookup(ifname="v0")[0]
            r.addr("add", index=idx, address="198.51.100.2", prefixlen=24)
            r.link("set", index=idx, state="up")
            r.link("set", index=r.link_lookup(ifname="v1")[0], state="up")

        def probe() -> tuple[CorralError, float]:
            started = time.monotonic()
            try:
                NbClient("tcp:198.51.100.3:6641", timeout=0.5).connect()
            except CorralError as e:
                return e, time.monotonic() - started
            raise AssertionError("connected to nothing")

        err, took = net.in_ns(ns, probe)
    finally:
        net.remove_ns(ns)
    assert isinstance(err, OvnError) and err.code is ECode.ENVIRON
    assert "tcp:198.51.100.3:6641" in err.message
    assert took < 3


# --- OVN southbound: the binding watcher -------------------------------------------------


def test_binding_watcher_records_each_chassis_change(servers: Servers) -> None:
    sb = servers.start(SB_SCHEMA, "sb")
    api = ovsdb.open_db(
        sb.remote, "OVN_Southbound", ["Chassis", "Encap", "Datapath_Binding", "Port_Binding"]
    ).api

    def run(*commands: Any) -> list[Any]:
        with api.transaction(check_error=True) as txn:
            for c in commands:
                txn.add(c)
        return [c.result for c in commands]

    chassis = {}
    for i, name in ((1, "node1"), (2, "node2")):
        encap = api.db_create("Encap", type="geneve", ip=f"203.0.113.{200 + i}", chassis_name=name)
        ch = api.db_create("Chassis", name=name, hostname=name, encaps=[encap])
        chassis[name] = run(encap, ch)[1]
    dp = run(api.db_create("Datapath_Binding", tunnel_key=1))[0]

    with BindingWatcher(sb.remote, NIC) as w:
        assert w.current is None
        pb = run(
            api.db_create(
                "Port_Binding",
                logical_port=NIC,
                tunnel_key=1,
                datapath=dp,
                chassis=chassis["node1"],
            )
        )[0]
        w.wait_for(lambda s: s is not None and s.chassis == "node1", 5)
        # Another port's binding is not recorded.
        run(api.db_create("Port_Binding", logical_port=NIC2, tunnel_key=2, datapath=dp))
        # The migration as ovn-controllers do it: dst added, activated, then main.
        run(api.db_set("Port_Binding", pb, ("additional_chassis", [chassis["node2"]])))
        run(api.db_set("Port_Binding", pb, ("options", {"additional-chassis-activated": "node2"})))
        run(
            api.db_set(
                "Port_Binding", pb, ("chassis", chassis["node2"]), ("additional_chassis", [])
            )
        )
        w.wait_for(lambda s: s is not None and s.chassis == "node2", 5)
        state = port_binding(sb.remote, NIC)
        run(api.db_destroy("Port_Binding", pb))
        w.wait_for(lambda s: s is None, 5)
        changes = w.changes
        path = w.chassis_path()

    assert [(c.chassis, c.additional_chassis) for c in changes] == [
        (None, ()),
        ("node1", ()),
        ("node1", ("node2",)),
        ("node2", ()),
        (None, ()),
    ]
    assert changes[-1].state is None
    assert path == [None, "node1", "node2", None]
    assert state is not None
    assert state.chassis == "node2" and state.activated == ("node2",)
    assert port_binding(sb.remote, NIC) is None


def test_binding_watcher_wait_for_times_out_with_state(servers: Servers) -> None:
    sb = servers.start(SB_SCHEMA, "sb")
    with BindingWatcher(sb.remote, NIC) as w, pytest.raises(OvnError, match="did not reach") as err:
        w.wait_for(lambda s: s is not None, 0.1)
    assert err.value.code is ECode.STATE


# --- end to end: kvm-ifup/kvm-ifdown with ovs-vswitchd and a real tap -------------------

BIN = Path(sys.executable).parent
# A tap holder offloading checksums as QEMU does (TUNSETOFFLOAD, TUN_F_CSUM).
HOLDER = (
    "import fcntl, sys\n"
    "from corral.network.tap import open_tap\n"
    "t = open_tap(sys.argv[1])\n"
    "fcntl.ioctl(t.fd, 0x400454D0, 1)\n"
    "print(t.name, flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
@pytest.mark.skipif(shutil.which("ovs-vswitchd") is None, reason="needs ovs-vswitchd")
@pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="needs /dev/net/tun")
def test_kvm_ifup_and_ifdown_with_vswitchd(servers: Servers) -> None:
    from corral.vcluster import net

    ns = f"{servers.prefix}-n"
    root = servers.dir / "root"
    run_dir = root / "run/openvswitch"
    sock = root / "run/openvswitch/db.sock"
    net.create_ns(ns)
    holders: list[subprocess.Popen[str]] = []

    def popen(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        return net.popen_in(ns, argv, **kw)

    try:
        server = servers.start(VSWITCH_SCHEMA, "conf", sock=sock, popen=popen)
        _add_bridges(server.sock, "br-int", "brv", datapath_type="netdev")
        vswitchd = net.popen_in(
            ns,
            [
                "ovs-vswitchd",
                f"unix:{sock}",
                "--disable-system",
                f"--unixctl={run_dir}/ovs-vswitchd.ctl",
                "--no-chdir",
                f"--log-file={servers.dir}/ovs-vswitchd.log",
            ],
            env={**os.environ, "OVS_RUNDIR": str(run_dir)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers.procs.append(vswitchd)
        holder = net.popen_in(
            ns,
            [sys.executable, "-c", HOLDER, f"{servers.prefix}t0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holders.append(holder)
        assert holder.stdout is not None and holder.stdin is not None
        tap = holder.stdout.readline().strip()
        assert tap
        assert net.in_ns(ns, lambda: ovs.tx_checksum_enabled(tap)) is True

        def script(
            name: str, *args: str, tap: str = tap, **extra: str
        ) -> subprocess.CompletedProcess[str]:
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "CORRAL_ROOT": str(root),
                "INTERFACE": tap,
                "MODE": "ovn",
                "INSTANCE": "inst1",
                "MAC": MAC,
                "INTERFACE_INDEX": "0",
                "INTERFACE_UUID": NIC,
            }
            env.update(extra)
            return net.run_in_ns(
                ns, [str(BIN / name), tap, *args], env=env, capture_output=True, text=True
            )

        r = script("kvm-ifup")
        assert r.returncode == 0, r.stderr
        info = ovs.port_info(str(sock), tap)
        assert info is not None
        assert info.bridge == "br-int"
        assert info.external_ids["iface-id"] == NIC
        assert info.ofport is not None and info.ofport > 0 and info.error is None
        assert net.links(ns)[tap].up
        assert net.in_ns(ns, lambda: ovs.tx_checksum_enabled(tap)) is False

        # A kvm-ifdown for another NIC (the tap name's previous owner) keeps it.
        r = script("kvm-ifdown", "shutdown", INTERFACE_UUID=NIC2)
        assert r.returncode == 0, r.stderr
        assert ovs.port_info(str(sock), tap) is not None

        # openvswitch mode on another bridge, with an access VLAN (a re-link).
        r = script("kvm-ifup", MODE="openvswitch", LINK="brv", VLAN=".10")
        assert r.returncode == 0, r.stderr
        info = ovs.port_info(str(sock), tap)
        assert info is not None and (info.bridge, info.tag) == ("brv", 10)

        r = script("kvm-ifdown", "shutdown", MODE="openvswitch", LINK="brv", VLAN=".10")
        assert r.returncode == 0, r.stderr
        assert ovs.port_info(str(sock), tap) is None

        # A tap that does not exist: a clear error, nothing is left in OVSDB.
        r = script("kvm-ifup", tap="nosuchtap")
        assert r.returncode == 1
        assert "Interface nosuchtap does not exist" in r.stderr
        assert ovs.port_info(str(sock), "nosuchtap") is None
    finally:
        for h in holders:
            if h.poll() is None:
                h.kill()
                h.wait()
        servers.close()  # the daemons run in the namespace: stop them first
        net.remove_ns(ns)


def test_in_process_ifup_reuses_the_connection(vswitch: str) -> None:
    """noded's path: two NICs plugged through one cached connection."""
    d1 = ovsdb.open_db(vswitch, "Open_vSwitch", VS_TABLES)
    _plug(vswitch, "tap0")
    _plug(vswitch, "tap1", iface_id=NIC2)
    assert ovsdb.open_db(vswitch, "Open_vSwitch", VS_TABLES) is d1
    assert ovs.port_of(vswitch, NIC2) == "tap1"

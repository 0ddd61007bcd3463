"""The KVM runtime file: Ganeti's format, written atomically, old vintages upgraded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from corral.errors import HypervisorError
from corral.hypervisor.kvm import runtime
from corral.hypervisor.kvm.describe import machine_from_runtime
from corral.hypervisor.kvm.model import ControlPaths

CTL = ControlPaths(*(f"/x/{n}" for n in "abcdefg"))

# The example of FORMATS.md, as Ganeti 3.0 writes it (ints in the argv, extra keys).
GANETI_30 = [
    [
        "/usr/bin/kvm", "-name", "inst1", "-m", 1024, "-smp", "1",
        "-pidfile", "/var/run/ganeti/kvm-hypervisor/pid/inst1",
        "-device", "virtio-balloon", "-daemonize", "-D", "/var/log/ganeti/kvm/inst1.log",
        "-machine", "pc-i440fx-7.2,accel=kvm", "-uuid", "4a1c0ab2-8e9d-4c57-a1b0-0e1f2a3b4c5d",
    ],
    [
        {
            "mac": "aa:00:00:11:22:33", "ip": None, "name": None, "network": None,
            "nicparams": {"mode": "bridged", "link": "br0", "vlan": ""},
            "uuid": "5f2b0c3e-1111-2222-3333-444455556666",
            "hvinfo": {"driver": "virtio-net-pci", "id": "nic-5f2b0c3e-1111-2222",
                       "bus": "pci.0", "addr": "0xd"},
        }
    ],
    {"nic_type": "paravirtual", "disk_type": "paravirtual", "kvm_pci_reservations": 12,
     "spice_bind": "", "cdrom_image_path": ""},
    [
        [
            {
                "dev_type": "drbd", "logical_id": ["n1", "n2", 11000, 0, 0, "secret"],
                "size": 10240, "mode": "rw", "uuid": "932df160-7a22-4067-a566-7e0ca8386133",
                "iv_name": "disk/0", "params": {}, "children": [],
                "hvinfo": {"driver": "virtio-blk-pci", "id": "disk-932df160-7a22-4067",
                           "bus": "pci.0", "addr": "0xc"},
            },
            "/var/run/ganeti/instance-disks/inst1:0",
            None,
        ]
    ],
]  # fmt: skip


def test_ganeti_30_file_is_read() -> None:
    rt = runtime.decode(json.dumps(GANETI_30).encode())
    assert rt.nics[0].hvinfo is not None and rt.nics[0].hvinfo.slot == 0xD
    assert rt.disks[0].disk.hvinfo is not None and rt.disks[0].disk.hvinfo.slot == 0xC
    assert rt.disks[0].link == "/var/run/ganeti/instance-disks/inst1:0"
    assert rt.kvm_cmd[4] == "1024"
    m = machine_from_runtime(rt, CTL)
    assert (m.name, m.memory, m.vcpus, m.accel) == ("inst1", 1024, 1, "kvm")
    # Ganeti-only parameters survive a round trip untouched.
    again = runtime.decode(runtime.encode(rt))
    assert again.hvparams["spice_bind"] == ""
    assert again.nics[0].hvinfo == rt.nics[0].hvinfo


def test_old_three_element_file_with_pci_keys_is_upgraded() -> None:
    old = [
        ["/usr/bin/kvm", "-name", "old1", "-localtime", "-m", "512"],
        [{"mac": "aa:00:00:00:00:01", "nicparams": {"mode": "bridged", "link": "br0"}, "pci": 6}],
        {"nic_type": "paravirtual"},
    ]
    rt = runtime.decode(json.dumps(old).encode())
    assert rt.disks == []
    nic = rt.nics[0]
    assert nic.uuid  # a fresh UUID was given
    assert nic.hvinfo is not None
    assert nic.hvinfo.addr == "0x6" and nic.hvinfo.bus == "pci.0"
    assert nic.hvinfo.id == f"hotnic-{nic.uuid.split('-')[0]}-pci-6"
    assert rt.kvm_cmd[3:5] == ["-rtc", "base=localtime"]


def test_pci_keyed_disk_is_upgraded() -> None:
    raw = [
        ["/usr/bin/kvm"],
        [],
        {},
        [[{"dev_type": "plain", "uuid": "932df160-7a22-4067-a566-7e0ca8386133", "pci": 12},
          "/dev/xenvg/disk0"]],
    ]  # fmt: skip
    rt = runtime.decode(json.dumps(raw).encode())
    info = rt.disks[0].disk.hvinfo
    assert info is not None and info.id == "hotdisk-932df160-pci-12" and info.addr == "0xc"
    assert rt.disks[0].uri is None


@pytest.mark.parametrize(
    "data",
    [b"", b"{}", b"[1,2]", b"not json", b"[[], {}, {}, []]", b'[[], [], {}, [["x"]]]'],
)
def test_malformed_files_are_refused_clearly(data: bytes) -> None:
    with pytest.raises(HypervisorError, match="runtime file"):
        runtime.decode(data)


def test_save_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "inst1.runtime"
    rt = runtime.decode(json.dumps(GANETI_30).encode())
    runtime.save(path, rt)
    runtime.save(path, rt)
    assert runtime.load(path) == rt
    assert os.listdir(tmp_path) == ["inst1.runtime"]  # no temp files left
    assert runtime.load(tmp_path / "missing.runtime") is None

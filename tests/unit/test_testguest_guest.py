"""The test guest's command line, console lines, /init address logic and module order."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from corral.errors import ECode
from corral.testguest import (
    AddrLine,
    BlockDev,
    BootLine,
    DevicesLine,
    GuestError,
    NetDev,
    PowerOffLine,
    builder,
    elf,
    initscript,
    kernel,
    kernel_cmdline,
    parse_line,
)

# --- kernel command line --------------------------------------------------------------------


def test_cmdline_keys_nics_by_bare_lowercase_mac_or_ifname() -> None:
    line = kernel_cmdline(
        {
            "52:54:00:AB:CD:01": ["203.0.113.10/24", "2001:db8::10/64"],
            "eth1": "198.51.100.7/25",
        },
        gateway="203.0.113.1",
        gateway6="2001:db8::1",
    )
    assert line.split() == [
        "console=ttyS0",
        "quiet",
        "corral.ip.525400abcd01=203.0.113.10/24",
        "corral.ip6.525400abcd01=2001:db8::10/64",
        "corral.ip.eth1=198.51.100.7/25",
        "corral.gw=203.0.113.1",
        "corral.gw6=2001:db8::1",
    ]


@pytest.mark.parametrize(
    ("addresses", "kw"),
    [
        ({"52:54:00:ab:cd": "203.0.113.10/24"}, {}),  # short MAC
        ({"eth 0": "203.0.113.10/24"}, {}),
        ({"eth0": "203.0.113.10"}, {}),  # no prefix
        ({"eth0": "203.0.113.300/24"}, {}),
        ({}, {"gateway": "2001:db8::1"}),  # v6 given as the v4 gateway
        ({}, {"gateway6": "not-an-ip"}),
    ],
)
def test_cmdline_rejects_malformed_input(addresses: dict[str, str], kw: dict[str, str]) -> None:
    with pytest.raises(GuestError) as err:
        kernel_cmdline(addresses, **kw)
    assert err.value.code is ECode.INVAL


# --- console lines ----------------------------------------------------------------------------


def test_parse_devices_line() -> None:
    got = parse_line(
        b"DEVICES net=eth0/52:54:00:00:00:01,eth1/52:54:00:00:00:02 "
        b"blk=vda/disk-1/2048,vdb//4194304 up=3.07\r\n"
    )
    assert got == DevicesLine(
        (NetDev("eth0", "52:54:00:00:00:01"), NetDev("eth1", "52:54:00:00:00:02")),
        (BlockDev("vda", "disk-1", 2048), BlockDev("vdb", "", 4194304)),
        3.07,
    )
    assert isinstance(got, DevicesLine)
    assert got.macs == {"52:54:00:00:00:01", "52:54:00:00:00:02"}
    assert got.serials == {"disk-1"}
    assert [(b.size_bytes, b.size_mib) for b in got.blk] == [(1 << 20, 1.0), (2 << 30, 2048.0)]


def test_parse_devices_line_without_sizes() -> None:
    # guests built before sizes were reported, and a disk gone before its size was read
    got = parse_line("DEVICES net= blk=vda/disk-1,vdb/x/ up=1.0")
    assert got == DevicesLine((), (BlockDev("vda", "disk-1"), BlockDev("vdb", "x")), 1.0)
    assert isinstance(got, DevicesLine)
    assert [(b.sectors, b.size_bytes, b.size_mib) for b in got.blk] == [(None, None, None)] * 2


def test_parse_empty_lists_and_other_lines() -> None:
    assert parse_line("DEVICES net= blk= up=1.50") == DevicesLine((), (), 1.5)
    assert parse_line("ADDR eth0 52:54:00:00:00:01 203.0.113.10/24") == AddrLine(
        "eth0", "52:54:00:00:00:01", "203.0.113.10/24"
    )
    assert parse_line("GUEST BOOT 6.1.0-56-cloud-amd64") == BootLine("6.1.0-56-cloud-amd64")
    assert parse_line("POWEROFF\r") == PowerOffLine()


@pytest.mark.parametrize(
    "noise",
    [
        "[    7.725230] reboot: Power down",
        "DEVICES net=eth0 blk= up=1.0",  # entry without /mac
        "DEVICES net= blk=vda/s/12k up=1.0",  # sectors not a number
        "DEVICES net= blk=vda/s/1/2 up=1.0",
        "DEVICES net=eth0/52:54:00:00:00:01/3 blk= up=1.0",
        "DEVICES net= blk=",
        "ADDR eth0",
        "",
    ],
)
def test_noise_is_not_a_report(noise: str) -> None:
    assert parse_line(noise) is None


# --- /init: which addresses go on which NIC -------------------------------------------------

BUSYBOX = shutil.which("busybox")


def _apply_addrs(tmp_path: Path, cmdline: str, ifname: str, mac: str) -> list[str]:
    """Run the real ``apply_addrs`` of /init with ``ip`` stubbed out."""
    script = initscript.render_init("6.1.0-test", ["virtio"])
    m = re.search(r"^apply_addrs\(\) \{\n.*?^\}\n", script, re.MULTILINE | re.DOTALL)
    assert m, "apply_addrs not found in /init"
    (tmp_path / "net/ipv6/conf" / ifname).mkdir(parents=True)
    (tmp_path / "net/ipv6/conf" / ifname / "accept_dad").write_text("1\n")
    prog = (
        'ip() { echo "IP $*"; }\n'
        f"PROCSYS={tmp_path}\n"
        f"CMDLINE='{cmdline}'\n"
        f"{m.group(0)}"
        f'apply_addrs "{ifname}" "{mac}"\n'
    )
    out = subprocess.run(
        [str(BUSYBOX), "sh", "-c", prog], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert (tmp_path / "net/ipv6/conf" / ifname / "accept_dad").read_text().strip() == "0"
    return out.stdout.splitlines()


@pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")
def test_init_applies_addresses_by_mac_and_by_ifname(tmp_path: Path) -> None:
    cmdline = (
        "console=ttyS0 quiet corral.ip.525400000001=203.0.113.10/24 "
        "corral.ip.eth0=198.51.100.5/24 corral.ip6.525400000001=2001:db8::10/64 "
        "corral.ip.525400000002=203.0.113.99/24 corral.ip.eth00=198.51.100.99/24 "
        "corral.ip.eth=198.51.100.98/24 corral.gw=203.0.113.1"
    )
    lines = _apply_addrs(tmp_path, cmdline, "eth0", "52:54:00:00:00:01")
    assert lines == [
        "IP link set eth0 up",
        "IP addr add 203.0.113.10/24 dev eth0",
        "ADDR eth0 52:54:00:00:00:01 203.0.113.10/24",
        "IP addr add 198.51.100.5/24 dev eth0",
        "ADDR eth0 52:54:00:00:00:01 198.51.100.5/24",
        "IP -6 addr add 2001:db8::10/64 dev eth0",
        "ADDR eth0 52:54:00:00:00:01 2001:db8::10/64",
        "IP route replace default via 203.0.113.1",
        "GW 203.0.113.1",
    ]


@pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")
def test_init_brings_up_a_nic_without_addresses(tmp_path: Path) -> None:
    lines = _apply_addrs(
        tmp_path, "console=ttyS0 corral.ip.525400000002=203.0.113.2/24", "eth1", "52:54:00:00:00:01"
    )
    assert lines == ["IP link set eth1 up"]


def _list_disks(sys_block: Path) -> str:
    """Run the real disk listing of /init's polling loop on a fake ``/sys/block``."""
    script = initscript.render_init("6.1.0-test", ["virtio"])
    m = re.search(r'^\tblk=""\n.*?^\tdone\n', script, re.MULTILINE | re.DOTALL)
    assert m, "disk listing not found in /init"
    prog = m.group(0).replace("/sys/block/*", f"{sys_block}/*") + 'echo "$blk"\n'
    out = subprocess.run([str(BUSYBOX), "sh", "-c", prog], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(BUSYBOX is None, reason="busybox not installed")
def test_init_lists_disks_with_serial_and_size(tmp_path: Path) -> None:
    for name, serial, size in (("vda", "disk 1/x\n", "2048\n"), ("vdb", None, "8\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "size").write_text(size)
        if serial is not None:
            (tmp_path / name / "serial").write_text(serial)
    (tmp_path / "loop0").mkdir()
    (tmp_path / "loop0" / "size").write_text("0\n")
    assert _list_disks(tmp_path) == "vda/disk_1_x/2048,vdb//8"
    # a grown disk changes the report, so the guest prints it again
    (tmp_path / "vda" / "size").write_text("4096\n")
    listed = _list_disks(tmp_path)
    assert listed == "vda/disk_1_x/4096,vdb//8"
    line = parse_line(f"DEVICES net= blk={listed} up=1.0")
    assert isinstance(line, DevicesLine)
    assert [b.size_bytes for b in line.blk] == [4096 * 512, 8 * 512]


def test_cached_image_of_another_init_script_is_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    before = builder.recipe()
    monkeypatch.setattr(initscript, "_INIT", initscript._INIT.replace("DEVICES", "DEVS"))
    assert builder.recipe() != before


def test_init_refuses_names_that_would_break_the_script() -> None:
    with pytest.raises(ValueError):
        initscript.render_init("6.1.0", ["virtio; reboot"])
    with pytest.raises(ValueError):
        initscript.render_init("6.1 $(reboot)", ["virtio"])


# --- modules: .modinfo dependencies ---------------------------------------------------------


def _fake_module(modinfo: dict[str, str]) -> bytes:
    """A minimal ELF64 file whose only content is a ``.modinfo`` section."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, v in modinfo.items())
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    info_off = 64
    str_off = info_off + len(info)
    sh_off = str_off + len(shstrtab)
    sh_off += -sh_off % 8
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, sh_off)
    struct.pack_into("<HHH", header, 0x3A, 64, 3, 2)
    sections = bytes(64)  # the null section
    sections += struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, info_off, len(info), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, str_off, len(shstrtab), 0, 0, 1, 0)
    body = bytes(header) + info + shstrtab
    return body + bytes(sh_off - len(body)) + sections


def _moddir(tmp_path: Path, mods: dict[str, str], builtin: list[str]) -> Path:
    order = []
    for name, deps in mods.items():
        # one file spelled with a dash, as some are: the kernel's name has "_"
        fname = "net-failover" if name == "net_failover" else name
        rel = f"kernel/drivers/{fname}.ko"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(_fake_module({"name": name, "depends": deps}))
        order.append(rel)
    (tmp_path / "modules.order").write_text("\n".join(order) + "\n")
    (tmp_path / "modules.builtin").write_text("".join(f"kernel/{b}.ko\n" for b in builtin))
    return tmp_path


def test_modinfo_is_read_from_the_elf_section() -> None:
    data = _fake_module({"name": "virtio_net", "depends": "virtio_ring,virtio", "alias": "x"})
    assert elf.modinfo(data) == {
        "name": ["virtio_net"],
        "depends": ["virtio_ring,virtio"],
        "alias": ["x"],
    }
    with pytest.raises(elf.ElfError):
        elf.modinfo(b"not elf at all" * 8)


def test_modules_come_after_their_dependencies(tmp_path: Path) -> None:
    moddir = _moddir(
        tmp_path,
        {
            "virtio_ring": "",
            "virtio": "",
            "failover": "",
            "net_failover": "failover",
            "virtio_net": "virtio_ring,virtio,net_failover",
            "virtio_blk": "virtio,virtio_ring,crc32c",
            "unused": "",
        },
        builtin=["crc32c"],
    )
    names = [m.name for m in kernel.resolve_modules(moddir, ["virtio_net", "virtio_blk"])]
    assert names == [
        "virtio_ring",
        "virtio",
        "failover",
        "net_failover",
        "virtio_net",
        "virtio_blk",
    ]


def test_missing_module_and_cycle_are_reported(tmp_path: Path) -> None:
    moddir = _moddir(tmp_path, {"a": "b", "b": "a", "c": "gone"}, builtin=[])
    with pytest.raises(GuestError, match=r"cycle: a -> b -> a"):
        kernel.resolve_modules(moddir, ["a"])
    with pytest.raises(GuestError, match=r"gone not found.*needed by c"):
        kernel.resolve_modules(moddir, ["c"])


def test_apt_cache_depends_output_names_the_kernel_package() -> None:
    out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n"
    assert kernel.parse_depends(out) == "linux-image-6.1.0-56-cloud-amd64"
    assert kernel.parse_depends("linux-image-cloud-amd64\n") is None

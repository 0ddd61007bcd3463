"""OS definitions: parsing the files, finding definitions, names and variants, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import osapi
from corral.errors import ParameterError
from corral.osapi import discovery, parse
from corral.osapi.env import os_core_env, os_env
from corral.params import BeParams, NicParams
from corral.paths import Paths
from corral.rpc.types import DiskSpec, InstanceSpec, NicSpec, OsDefinition, OsParameter

NOOP = Path("/usr/share/ganeti/os/noop")


def write_os(
    base: Path,
    name: str,
    api: str = "20\n",
    variants: str | None = "default\nalt\n",
    parameters: str | None = "size Size of the root disk\nflavour\tWhich flavour\n",
    scripts: tuple[str, ...] = ("create", "import", "export", "rename", "verify"),
    mode: int = 0o755,
) -> Path:
    d = base / name
    d.mkdir(parents=True)
    (d / "ganeti_api_version").write_text(api)
    if variants is not None:
        (d / "variants.list").write_text(variants)
    if parameters is not None:
        (d / "parameters.list").write_text(parameters)
    for s in scripts:
        (d / s).write_text("#!/bin/sh\nexit 0\n")
        (d / s).chmod(mode)
    return d


def defn(**kw: object) -> OsDefinition:
    base: dict[str, object] = {
        "name": "testos",
        "path": "/srv/corral/os/testos",
        "valid": True,
        "api_versions": [20],
        "variants": ["default", "alt"],
        "parameters": [OsParameter(name="size"), OsParameter(name="flavour")],
    }
    base.update(kw)
    return OsDefinition(**base)  # type: ignore[arg-type]


# --- the text files ---------------------------------------------------------------------------


def test_api_versions_in_file_order_and_broken_lines() -> None:
    assert parse.parse_api_versions("20\n15\n10\n") == [20, 15, 10]
    assert parse.parse_api_versions("5\n10\n") == [5, 10]
    assert parse.parse_api_versions(" 20 \n\n# comment\n") == [20]
    assert parse.parse_api_versions("") == []
    with pytest.raises(parse.DefinitionError, match="can't be converted to integer: 'twenty'"):
        parse.parse_api_versions("20\ntwenty\n")
    assert parse.supported_versions([5, 10, 25, 15]) == [15, 10]


def test_variants_skip_blank_lines_comments_and_duplicates() -> None:
    assert parse.parse_variants("# first is default\nbuster\n\n  bullseye \nbuster\n") == [
        "buster",
        "bullseye",
    ]
    assert parse.parse_variants("") == []


def test_parameters_with_spaces_tabs_and_no_description() -> None:
    params = parse.parse_parameters(
        "dhcp Whether to enable (yes) or disable (no) dhcp\n"
        "root_size\tThe size of the root partition, in GiB\n"
        "\n# comment\nbare\n"
    )
    assert params == [
        OsParameter(name="dhcp", description="Whether to enable (yes) or disable (no) dhcp"),
        OsParameter(name="root_size", description="The size of the root partition, in GiB"),
        OsParameter(name="bare", description=""),
    ]
    with pytest.raises(parse.DefinitionError, match="declared twice"):
        parse.parse_parameters("a one\na two\n")
    with pytest.raises(parse.DefinitionError, match="invalid parameter name 'a=b'"):
        parse.parse_parameters("a=b desc\n")


def test_required_files_grow_with_the_api_version() -> None:
    assert parse.required_files(10) == dict.fromkeys(("create", "import", "export", "rename"), True)
    assert parse.required_files(15)["variants.list"] is False
    f20 = parse.required_files(20)
    assert f20["verify"] is True and f20["parameters.list"] is True
    assert f20["variants.list"] is False


# --- loading definitions from disk ---------------------------------------------------------------


def test_valid_api20_definition(tmp_path: Path) -> None:
    write_os(tmp_path, "testos")
    d = discovery.load("testos", tmp_path / "testos")
    assert d.valid and d.diagnose == ""
    assert d.api_versions == [20]
    assert d.variants == ["default", "alt"]
    assert [p.name for p in d.parameters] == ["size", "flavour"]
    assert d.parameters[1].description == "Which flavour"


@pytest.mark.skipif(not NOOP.is_dir(), reason="Debian's ganeti-os-noop is not installed")
def test_debian_noop_is_a_valid_api10_definition() -> None:
    d = discovery.load("noop", NOOP)
    assert d.valid, d.diagnose
    assert d.api_versions == [5, 10]  # as declared; 5 is not spoken, 10 is
    assert osapi.api_version(d) == 10
    assert d.variants == [] and d.parameters == []


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"scripts": ("create", "import", "export", "rename")}, "File 'verify' under path"),
        ({"parameters": None}, "File 'parameters.list' under path"),
        ({"api": "twenty\n"}, "can't be converted to integer"),
        ({"api": "5\n25\n"}, "API version mismatch"),
        ({"api": ""}, "API version mismatch"),
        ({"mode": 0o644}, "is not executable"),
        ({"parameters": "a one\na two\n"}, "declared twice"),
    ],
)
def test_broken_definitions_are_invalid_with_a_reason(
    tmp_path: Path, kwargs: dict[str, object], reason: str
) -> None:
    write_os(tmp_path, "broken", **kwargs)  # type: ignore[arg-type]
    d = discovery.load("broken", tmp_path / "broken")
    assert not d.valid
    assert reason in d.diagnose, d.diagnose


def test_missing_or_odd_api_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    d = discovery.load("empty", tmp_path / "empty")
    assert not d.valid and "Required file 'ganeti_api_version' not found" in d.diagnose
    (tmp_path / "odd" / "ganeti_api_version").mkdir(parents=True)
    assert "not a regular file" in discovery.load("odd", tmp_path / "odd").diagnose


def test_api15_needs_no_verify_and_variants_are_optional(tmp_path: Path) -> None:
    write_os(
        tmp_path,
        "v15",
        api="15\n10\n",
        variants=None,
        parameters=None,
        scripts=("create", "import", "export", "rename"),
    )
    d = discovery.load("v15", tmp_path / "v15")
    assert d.valid, d.diagnose
    assert d.variants == [] and osapi.api_version(d) == 15


def test_search_path_order_and_first_definition_wins(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    dirs = osapi.search_path(paths)
    assert dirs[0] == tmp_path / "srv/corral/os"
    assert dirs[1] == tmp_path / "srv/ganeti/os"
    assert dirs[2:] == [Path(p) for p in discovery.GANETI_OS_DIRS[1:]]
    write_os(dirs[1], "dup", api="10\n", variants=None, parameters=None, scripts=("create",))
    write_os(dirs[0], "dup")
    (dirs[0] / "not-a-dir").write_text("x")
    (dirs[0] / ".hidden").mkdir()
    found = osapi.find("dup", dirs)
    assert found is not None and found.valid and found.path == str(dirs[0] / "dup")
    names = [(d.name, d.path) for d in osapi.diagnose(dirs[:2])]
    assert names == [("dup", str(dirs[0] / "dup")), ("dup", str(dirs[1] / "dup"))]
    assert not osapi.diagnose(dirs[:2])[1].valid  # the shadowed one misses scripts


@pytest.mark.parametrize("name", ["", ".", "..", "../etc", "a/b", "x\0y"])
def test_find_never_leaves_the_search_path(tmp_path: Path, name: str) -> None:
    (tmp_path / "os").mkdir()
    write_os(tmp_path, "etc")
    assert osapi.find(name, [tmp_path / "os"]) is None


# --- names, variants, parameters ------------------------------------------------------------------


def test_split_name() -> None:
    assert osapi.split_name("debootstrap+buster") == ("debootstrap", "buster")
    assert osapi.split_name("noop") == ("noop", "")
    assert osapi.split_name("a+b+c") == ("a", "b+c")


def test_resolve_variant() -> None:
    d = defn()
    assert osapi.resolve_variant(d, "testos") == "default"  # no variant: the first one
    assert osapi.resolve_variant(d, "testos+alt") == "alt"
    with pytest.raises(ParameterError, match="has no variant 'nope' \\(variants: default, alt\\)"):
        osapi.resolve_variant(d, "testos+nope")
    assert osapi.resolve_variant(d, "testos+nope", force_variant=True) == "nope"
    plain = defn(api_versions=[10], variants=[])
    assert osapi.resolve_variant(plain, "testos") == ""
    with pytest.raises(ParameterError, match="doesn't support variants \\('x' passed\\)"):
        osapi.resolve_variant(plain, "testos+x")
    # Variants are an API 15 feature: an API 10 OS with a variants.list has none.
    assert osapi.resolve_variant(defn(api_versions=[10]), "testos") == ""


def test_check_parameters() -> None:
    osapi.check_parameters(defn(), {"size": "1", "flavour": "x"})
    with pytest.raises(ParameterError, match="not a parameter of OS 'testos'") as e:
        osapi.check_parameters(defn(), {"size": "1", "colour": "red"})
    assert e.value.field == "osparams/colour"
    with pytest.raises(ParameterError, match="takes no parameters"):
        osapi.check_parameters(defn(api_versions=[10], parameters=[]), {"a": "1"})


# --- the environment -----------------------------------------------------------------------------


def _spec() -> InstanceSpec:
    return InstanceSpec(
        name="inst1.example.com",
        uuid="0c3a4f7e-1111-2222-3333-444455556666",
        hypervisor="kvm",
        os="testos+alt",
        hvparams={"kernel_path": "", "disk_type": "paravirtual", "nic_type": "e1000", "acpi": True},
        beparams=BeParams(maxmem=512, minmem=256, vcpus=2),
        nics=[
            NicSpec(
                uuid="nic-uuid-0",
                name="eth0",
                index=0,
                mac="aa:00:00:11:22:33",
                ip="198.51.100.10",
                nicparams=NicParams(mode="bridged", link="br0"),
                network={"NETWORK_NAME": "net1", "NETWORK_SUBNET": "198.51.100.0/24"},
            ),
            NicSpec(
                uuid="nic-uuid-1",
                index=1,
                mac="aa:00:00:11:22:34",
                nicparams=NicParams(mode="routed", link=""),
            ),
        ],
        disks=[
            DiskSpec(
                uuid="disk-uuid-0",
                name="root",
                index=0,
                dev_type="file",
                size=1024,
                path="/srv/corral/file-storage/i/d0.img",
            ),
            DiskSpec(
                uuid="disk-uuid-1", index=1, dev_type="plain", size=64, mode="ro", path="/dev/vg/lv"
            ),
        ],
        ctime=1700000000.5,
        mtime=1700000100.25,
    )


def test_os_env_golden() -> None:
    env = os_env(_spec(), defn(), {"flavour": "x", "size": "3"}, primary_node="node1", debug=1)
    assert env == {
        "OS_API_VERSION": "20",
        "OS_NAME": "testos",
        "OS_VARIANT": "alt",
        "DEBUG_LEVEL": "1",
        "OSP_FLAVOUR": "x",
        "OSP_SIZE": "3",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "INSTANCE_NAME": "inst1.example.com",
        "INSTANCE_OS": "testos+alt",
        "INSTANCE_UUID": "0c3a4f7e-1111-2222-3333-444455556666",
        "INSTANCE_CTIME": "1700000000.5",
        "INSTANCE_MTIME": "1700000100.25",
        "INSTANCE_PRIMARY_NODE": "node1",
        "HYPERVISOR": "kvm",
        "DISK_COUNT": "2",
        "NIC_COUNT": "2",
        "INSTANCE_SECONDARY_NODES": "",
        "DISK_0_PATH": "/srv/corral/file-storage/i/d0.img",
        "DISK_0_ACCESS": "rw",
        "DISK_0_UUID": "disk-uuid-0",
        "DISK_0_SIZE": "1024",
        "DISK_0_NAME": "root",
        "DISK_0_FRONTEND_TYPE": "paravirtual",
        "DISK_0_BACKEND_TYPE": "file:loop",
        "DISK_1_PATH": "/dev/vg/lv",
        "DISK_1_ACCESS": "ro",
        "DISK_1_UUID": "disk-uuid-1",
        "DISK_1_SIZE": "64",
        "DISK_1_FRONTEND_TYPE": "paravirtual",
        "DISK_1_BACKEND_TYPE": "block",
        "NIC_0_MAC": "aa:00:00:11:22:33",
        "NIC_0_UUID": "nic-uuid-0",
        "NIC_0_NAME": "eth0",
        "NIC_0_IP": "198.51.100.10",
        "NIC_0_MODE": "bridged",
        "NIC_0_BRIDGE": "br0",
        "NIC_0_LINK": "br0",
        "NIC_0_NETWORK_NAME": "net1",
        "NIC_0_NETWORK_SUBNET": "198.51.100.0/24",
        "NIC_0_FRONTEND_TYPE": "e1000",
        "NIC_1_MAC": "aa:00:00:11:22:34",
        "NIC_1_UUID": "nic-uuid-1",
        "NIC_1_MODE": "routed",
        "NIC_1_FRONTEND_TYPE": "e1000",
        "INSTANCE_BE_maxmem": "512",
        "INSTANCE_BE_minmem": "256",
        "INSTANCE_BE_vcpus": "2",
        "INSTANCE_BE_auto_balance": "True",
        "INSTANCE_BE_always_failover": "False",
        "INSTANCE_BE_spindle_use": "1",
        "INSTANCE_HV_kernel_path": "",
        "INSTANCE_HV_disk_type": "paravirtual",
        "INSTANCE_HV_nic_type": "e1000",
        "INSTANCE_HV_acpi": "True",
    }


def test_core_env_defaults_and_old_apis() -> None:
    env = os_core_env("testos", defn(), {})
    assert env["OS_VARIANT"] == "default" and env["OS_API_VERSION"] == "20"
    assert not any(k.startswith("OSP_") for k in env)
    noop = defn(name="noop", api_versions=[5, 10], variants=[], parameters=[])
    env = os_core_env("noop", noop, {}, debug=0)
    assert env == {
        "OS_API_VERSION": "10",
        "OS_NAME": "noop",
        "OS_VARIANT": "",
        "DEBUG_LEVEL": "0",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    # A variant forced past variants.list reaches the script as given.
    assert os_core_env("testos+beta", defn(), {})["OS_VARIANT"] == "beta"

"""OS definitions end to end: ``gnt-os``, OS scripts at add, reinstall and rename.

A test OS (API 20, variants ``default`` and ``alt``, parameters ``size``
and ``flavour``) is installed in the node's ``/srv/corral/os``. Its
``create`` and ``rename`` scripts write a marker and their whole
environment at the start of the instance's first disk image, which is how
the tests see what the scripts got; ``verify`` refuses ``flavour=bad`` and
``create`` fails for ``flavour=crash``. Debian's ``noop`` (API 10) works
as installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.errors import ECode
from corral.testing.cluster import TempCluster

NOOP = Path("/usr/share/ganeti/os/noop")
NET = "0:mode=routed,ip=198.51.100.10"  # no bridge needed on the test host

TESTOS = {
    "ganeti_api_version": "20\n15\n",
    "variants.list": "default\nalt\n",
    "parameters.list": (
        "size Size of the root filesystem, in GiB\nflavour\tWhich flavour to install\n"
    ),
    "create": """#!/bin/sh
case "$OSP_FLAVOUR" in crash) echo "cannot install flavour crash" >&2; exit 3;; esac
{ echo "TESTOS-CREATE"; env; echo "TESTOS-END"; } | dd of="$DISK_0_PATH" conv=notrunc status=none
""",
    "rename": """#!/bin/sh
{ echo "TESTOS-RENAME"; env; echo "TESTOS-END"; } | dd of="$DISK_0_PATH" conv=notrunc status=none
""",
    "import": '#!/bin/sh\ncat > "$IMPORT_DEVICE"\n',
    "export": '#!/bin/sh\ncat "$EXPORT_DEVICE"\n',
    "verify": """#!/bin/sh
[ "$1" = parameters ] || { echo "unknown check: $1" >&2; exit 2; }
case "$OSP_FLAVOUR" in
  ""|x|y|crash) ;;
  *) echo "Invalid value '$OSP_FLAVOUR' for the flavour parameter" >&2; exit 1;;
esac
""",
}


def install_os(c: TempCluster, name: str, files: dict[str, str]) -> Path:
    d = c.paths.host_path(f"/srv/corral/os/{name}")
    d.mkdir(parents=True)
    for fname, text in files.items():
        (d / fname).write_text(text)
        if "." not in fname and fname != "ganeti_api_version":
            (d / fname).chmod(0o755)
    return d


@pytest.fixture(scope="module")
def oscluster() -> Iterator[TempCluster]:
    with TempCluster(prefix="cx-os-") as c:
        install_os(c, "testos", TESTOS)
        # API 20 without its verify script: found, but invalid.
        install_os(c, "brokenos", {k: v for k, v in TESTOS.items() if k != "verify"})
        yield c


def _add(c: TempCluster, name: str, *args: str) -> Any:
    return c.run(
        "gnt-instance", "add", "-t", "file", "--disk", "0:size=4M", "--net", NET, *args, name
    )


def _instance(c: TempCluster, name: str) -> dict[str, Any] | None:
    for inst in c.config()["instances"].values():
        if inst["name"] == name:
            return dict(inst)
    return None


def _image(c: TempCluster, name: str) -> Path:
    inst = _instance(c, name)
    assert inst is not None, f"{name} not in the config"
    disk = c.config()["disks"][inst["disks"][0]]
    return c.paths.host_path(disk["logical_id"][1])


def script_env(c: TempCluster, name: str) -> tuple[str, dict[str, str]]:
    """Which script wrote the first disk last, and the environment it had."""
    with open(_image(c, name), "rb") as f:
        head = f.read(256 * 1024).split(b"\0", 1)[0].decode()
    lines = head.split("TESTOS-END")[0].splitlines()
    if not lines:
        return "", {}
    return lines[0], dict(line.split("=", 1) for line in lines[1:] if "=" in line)


def _storage(c: TempCluster) -> list[str]:
    root = c.paths.file_storage_dir
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


# --- gnt-os ----------------------------------------------------------------------------------


def test_gnt_os_list_shows_valid_oses_with_their_variants(oscluster: TempCluster) -> None:
    c = oscluster
    out = c.run("gnt-os", "list", check=True).stdout.splitlines()
    assert out[0] == "Name"
    rows = c.run("gnt-os", "list", "--no-headers", check=True).stdout.splitlines()
    assert rows == out[1:]
    assert "testos+default" in rows and "testos+alt" in rows
    assert rows.index("testos+default") + 1 == rows.index("testos+alt")
    assert "testos" not in rows  # an OS with variants is listed by variant
    assert not any(r.startswith("brokenos") for r in rows)
    if NOOP.is_dir():
        assert "noop" in rows
    assert c.run("corral", "os", "list", "--no-headers", check=True).stdout.splitlines() == rows


def test_gnt_os_diagnose_reports_the_broken_definition(oscluster: TempCluster) -> None:
    r = oscluster.run("gnt-os", "diagnose")
    assert r.returncode == 1, r.stdout + r.stderr  # Ganeti's: 1 when an OS is not valid
    out = r.stdout
    os_dir = oscluster.paths.host_path("/srv/corral/os")
    assert "OS: testos [global status: valid]" in out
    assert "  Variants: [default, alt]" in out
    assert (
        f"  Node: node1, status: valid (path: {os_dir}/testos) [API versions: 20, 15] "
        "[variants: default, alt] [parameters: size, flavour]"
    ) in out
    assert "OS: brokenos [global status: invalid]" in out
    assert re.search(
        rf"Node: node1, status: invalid - File 'verify' under path '{os_dir}/brokenos' "
        r"is missing \(No such file or directory\)",
        out,
    ), out


def test_gnt_os_info(oscluster: TempCluster) -> None:
    out = oscluster.run("gnt-os", "info", "testos", "brokenos", "nope", check=True).stdout
    assert out.split("\n\n")[:3] == [
        "brokenos:\n  - valid: False\n  - hidden: False\n  - blacklisted: False",
        "testos:\n  - valid: True\n  - hidden: False\n  - blacklisted: False\n"
        "  - API versions:\n    - 15\n    - 20\n"
        "  - variants:\n    - default\n    - alt\n"
        "  - parameters:\n"
        "    - size: Size of the root filesystem, in GiB\n"
        "    - flavour: Which flavour to install",
        "nope: ",
    ]


# --- create ------------------------------------------------------------------------------------


def test_add_runs_create_with_the_os_environment(oscluster: TempCluster) -> None:
    c = oscluster
    r = _add(c, "i-env", "-o", "testos+alt", "-O", "flavour=x,size=3", "-B", "vcpus=2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Running the OS create script of testos+alt on node1" in r.stdout
    assert r.stdout.index("create script") < r.stdout.index("Starting instance")
    marker, env = script_env(c, "i-env")
    inst = _instance(c, "i-env")
    assert inst is not None
    assert marker == "TESTOS-CREATE"
    assert inst["os"] == "testos+alt" and inst["osparams"] == {"flavour": "x", "size": "3"}
    expected = {
        "OS_API_VERSION": "20",
        "OS_NAME": "testos",
        "OS_VARIANT": "alt",
        "INSTANCE_OS": "testos+alt",
        "OSP_FLAVOUR": "x",
        "OSP_SIZE": "3",
        "DEBUG_LEVEL": "0",
        "INSTANCE_NAME": "i-env",
        "INSTANCE_UUID": inst["uuid"],
        "INSTANCE_PRIMARY_NODE": "node1",
        "HYPERVISOR": "fake",
        "INSTANCE_HV_start_delay": "0.0",
        "INSTANCE_BE_vcpus": "2",
        "DISK_COUNT": "1",
        "DISK_0_PATH": str(_image(c, "i-env")),
        "DISK_0_SIZE": "4",
        "DISK_0_ACCESS": "rw",
        "DISK_0_BACKEND_TYPE": "file:loop",
        "NIC_COUNT": "1",
        "NIC_0_MAC": inst["nics"][0]["mac"],
        "NIC_0_IP": "198.51.100.10",
        "NIC_0_MODE": "routed",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert "INSTANCE_REINSTALL" not in env
    assert "CORRAL_ROOT" not in env and "HOME" not in env  # nothing inherited
    logs = os.listdir(c.paths.log_dir / "os")
    assert any(n.startswith("add-testos+alt-i-env-") and n.endswith(".log") for n in logs)
    status = c.run("gnt-instance", "list", "--no-headers", "-o", "status,os", "i-env").stdout
    assert status.split() == ["running", "testos+alt"]


def test_no_variant_means_the_default_one_and_noop_works(oscluster: TempCluster) -> None:
    c = oscluster
    r = _add(c, "i-default", "--no-start", "-o", "testos")
    assert r.returncode == 0, r.stderr
    assert script_env(c, "i-default")[1]["OS_VARIANT"] == "default"
    r = _add(c, "i-forced", "--no-start", "-o", "testos+beta", "--force-variant")
    assert r.returncode == 0, r.stderr
    assert script_env(c, "i-forced")[1]["OS_VARIANT"] == "beta"
    if NOOP.is_dir():
        r = _add(c, "i-noop", "-o", "noop")
        assert r.returncode == 0, r.stderr
        assert any(n.startswith("add-noop-i-noop-") for n in os.listdir(c.paths.log_dir / "os"))


def test_no_install_skips_create(oscluster: TempCluster) -> None:
    c = oscluster
    r = _add(c, "i-noinst", "--no-start", "--no-install", "-o", "testos+alt")
    assert r.returncode == 0, r.stderr
    assert "create script" not in r.stdout
    assert script_env(c, "i-noinst") == ("", {})  # the image is still all zeros
    assert not any("-i-noinst-" in n for n in os.listdir(c.paths.log_dir / "os"))


BAD_ADDS: list[tuple[list[str], ECode, list[str]]] = [
    (["-o", "testos+nope"], ECode.INVAL, ["os_type", "no variant 'nope'", "default, alt"]),
    (["-o", "testos", "-O", "colour=red"], ECode.INVAL, ["osparams/colour", "not a parameter"]),
    (
        ["-o", "testos", "-O", "flavour=bad"],
        ECode.INVAL,
        ["refused the parameters", "Invalid value 'bad' for the flavour parameter"],
    ),
    (["-o", "brokenos"], ECode.INVAL, ["OS 'brokenos' is invalid", "File 'verify'"]),
    (["-o", "nope"], ECode.INVAL, ["OS 'nope' not found on node node1"]),
    (["-O", "size=1"], ECode.INVAL, ["osparams", "without an OS"]),
    (
        ["-o", "testos", "-O", "flavour=crash"],
        ECode.ENVIRON,
        ["Could not install OS 'testos'", "cannot install flavour crash", "removed again"],
    ),
]


@pytest.mark.parametrize(("args", "code", "wanted"), BAD_ADDS, ids=lambda v: str(v))
def test_bad_os_requests_create_nothing(
    oscluster: TempCluster, args: list[str], code: ECode, wanted: list[str]
) -> None:
    c = oscluster
    before = _storage(c)
    r = _add(c, "i-bad", "--no-start", *args)
    assert r.returncode == code.exit_code, r.stdout + r.stderr
    assert r.stderr.startswith("Failure: ")
    for w in wanted:
        assert w in r.stderr, r.stderr
    assert _instance(c, "i-bad") is None
    assert _storage(c) == before  # no disk image left behind
    if code is ECode.ENVIRON:  # the script ran: the error names its log
        log = re.search(r"the log (\S+):", r.stderr)
        assert log and Path(log.group(1)).exists(), r.stderr


def test_dry_run_checks_the_os_too(oscluster: TempCluster) -> None:
    r = _add(oscluster, "i-dry", "--dry-run", "-o", "testos", "-O", "flavour=bad")
    assert r.returncode == ECode.INVAL.exit_code and "Invalid value 'bad'" in r.stderr
    r = _add(oscluster, "i-dry", "--dry-run", "-o", "testos", "-O", "flavour=y")
    assert r.returncode == 0, r.stderr


# --- reinstall and rename -----------------------------------------------------------------------


def test_reinstall(oscluster: TempCluster) -> None:
    c = oscluster
    assert _add(c, "i-re", "-o", "testos+default", "-O", "flavour=x").returncode == 0
    r = c.run("gnt-instance", "reinstall", "-f", "i-re")
    assert r.returncode == ECode.STATE.exit_code
    assert "Instance 'i-re' is marked to be up, cannot reinstall" in r.stderr
    c.run("gnt-instance", "shutdown", "i-re", check=True)

    r = c.run("gnt-instance", "reinstall", "i-re")  # no terminal to ask: refused
    assert r.returncode != 0 and "Refusing without --force" in r.stderr
    assert script_env(c, "i-re")[1]["OSP_FLAVOUR"] == "x"

    r = c.run("gnt-instance", "reinstall", "-f", "-o", "testos+alt", "-O", "flavour=y", "i-re")
    assert r.returncode == 0, r.stdout + r.stderr
    marker, env = script_env(c, "i-re")
    assert marker == "TESTOS-CREATE"
    assert env["INSTANCE_REINSTALL"] == "1"
    assert env["OS_VARIANT"] == "alt" and env["INSTANCE_OS"] == "testos+alt"
    assert env["OSP_FLAVOUR"] == "y"
    inst = _instance(c, "i-re")
    assert inst is not None
    assert inst["os"] == "testos+alt" and inst["osparams"] == {"flavour": "y"}
    assert inst["admin_state"] == "down"

    # A failing reinstall leaves the config as it was; a refused one runs nothing.
    r = c.run("gnt-instance", "reinstall", "-f", "-o", "testos", "-O", "flavour=crash", "i-re")
    assert r.returncode == ECode.ENVIRON.exit_code and "cannot install flavour crash" in r.stderr
    r = c.run("gnt-instance", "reinstall", "-f", "-O", "flavour=bad", "i-re")
    assert r.returncode == ECode.INVAL.exit_code and "Invalid value 'bad'" in r.stderr
    inst = _instance(c, "i-re")
    assert inst is not None
    assert inst["os"] == "testos+alt" and inst["osparams"] == {"flavour": "y"}
    assert script_env(c, "i-re")[1]["OSP_FLAVOUR"] == "y"

    # -O merges into the parameters the instance has; "default" removes one.
    r = c.run("gnt-instance", "reinstall", "-f", "-O", "size=5", "i-re")
    assert r.returncode == 0, r.stderr
    assert (_instance(c, "i-re") or {})["osparams"] == {"flavour": "y", "size": "5"}
    r = c.run("gnt-instance", "reinstall", "-f", "-O", "flavour=default", "i-re")
    assert r.returncode == 0, r.stderr
    env = script_env(c, "i-re")[1]
    assert "OSP_FLAVOUR" not in env and env["OSP_SIZE"] == "5"


def test_rename_runs_the_rename_script(oscluster: TempCluster) -> None:
    c = oscluster
    assert _add(c, "i-old", "--no-start", "-o", "testos+alt").returncode == 0
    c.run("gnt-instance", "rename", "i-old", "i-new", check=True)
    marker, env = script_env(c, "i-new")
    assert marker == "TESTOS-RENAME"
    assert env["OLD_INSTANCE_NAME"] == "i-old" and env["INSTANCE_NAME"] == "i-new"
    assert env["OS_VARIANT"] == "alt"
    logs = os.listdir(c.paths.log_dir / "os")
    assert any(n.startswith("rename-testos+alt-i-old-i-new-") for n in logs)

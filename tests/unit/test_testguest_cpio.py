"""The newc cpio writer behind the test guest's initramfs."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.testguest.cpio import CpioEntry, CpioFormatError, read_newc, write_newc

SAMPLE = [
    CpioEntry.file("init", b"#!/bin/sh\necho hi\n", 0o755),
    CpioEntry.file("lib/modules/virtio.ko", b"\x7fELF" + bytes(range(256)) * 3),
    CpioEntry.symlink("bin/sh", "/bin/busybox"),
    CpioEntry.chardev("dev/console", 5, 1),
    CpioEntry.chardev("dev/null", 1, 3, 0o666),
    CpioEntry.directory("proc"),
]


def test_round_trip_keeps_names_modes_data_and_devices() -> None:
    back = {e.name: e for e in read_newc(write_newc(SAMPLE))}
    for entry in SAMPLE:
        assert back[entry.name] == entry
    # parents the caller did not list are created as plain directories
    assert back["lib/modules"].mode == stat.S_IFDIR | 0o755
    assert back["lib"].mode == stat.S_IFDIR | 0o755
    assert back["dev"].mode == stat.S_IFDIR | 0o755


def test_output_is_reproducible_and_independent_of_input_order() -> None:
    first = write_newc(SAMPLE)
    assert write_newc(list(reversed(SAMPLE))) == first
    assert write_newc(SAMPLE[2:] + SAMPLE[:2]) == first


def test_directories_come_before_their_contents() -> None:
    names = [e.name for e in read_newc(write_newc(SAMPLE))]
    for i, name in enumerate(names):
        if "/" in name:
            assert name.rsplit("/", 1)[0] in names[:i]


def test_headers_carry_owner_root_and_mtime_zero_and_4_byte_alignment() -> None:
    data = write_newc(SAMPLE)
    assert len(data) % 4 == 0
    pos = 0
    while True:
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        assert data[pos : pos + 6] == b"070701"
        assert fields[2:4] == [0, 0]  # uid, gid
        assert fields[5] == 0  # mtime
        namesize, filesize = fields[11], fields[6]
        name = data[pos + 110 : pos + 110 + namesize - 1]
        end = pos + 110 + namesize
        end += -end % 4
        end += filesize
        end += -end % 4
        if name == b"TRAILER!!!":
            assert end == len(data)
            break
        pos = end


@pytest.mark.skipif(shutil.which("cpio") is None, reason="GNU cpio not installed")
def test_gnu_cpio_lists_the_archive() -> None:
    out = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=write_newc(SAMPLE), capture_output=True, check=True
    ).stdout.decode()
    lines = {line.split(" -> ")[0].split()[-1]: line for line in out.splitlines()}
    assert lines["dev/console"].startswith("crw-------")
    assert "5,   1" in lines["dev/console"]
    assert lines["init"].startswith("-rwxr-xr-x")
    assert "-> /bin/busybox" in lines["bin/sh"]
    assert lines["lib/modules"].startswith("drwxr-xr-x")
    assert all(" root     root " in line for line in out.splitlines())


@pytest.mark.parametrize("name", ["", "/init", "a//b", "./init", "a/../b", "dir/"])
def test_rejects_names_the_kernel_would_misplace(name: str) -> None:
    with pytest.raises(ValueError):
        write_newc([CpioEntry.file(name, b"x")])


def test_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        write_newc([CpioEntry.file("init", b"a"), CpioEntry.file("init", b"b")])


def test_reader_rejects_garbage_and_truncation() -> None:
    data = write_newc(SAMPLE)
    with pytest.raises(CpioFormatError):
        read_newc(b"not a cpio archive" * 10)
    with pytest.raises(CpioFormatError):
        read_newc(data[: len(data) // 2])


_names = st.lists(
    st.text(alphabet="abcdefgh_.-", min_size=1, max_size=8).filter(lambda s: s not in (".", "..")),
    min_size=1,
    max_size=3,
).map("/".join)


@given(st.dictionaries(_names, st.binary(max_size=64), max_size=8))
def test_any_file_set_round_trips(files: dict[str, bytes]) -> None:
    # a name that is also a parent of another is a directory, not a file
    dirs = {n.rsplit("/", i)[0] for n in files for i in range(1, n.count("/") + 1)}
    entries = [CpioEntry.file(n, d) for n, d in files.items() if n not in dirs]
    back = {e.name: e.data for e in read_newc(write_newc(entries))}
    for entry in entries:
        assert back[entry.name] == entry.data

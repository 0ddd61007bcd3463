"""The guest kernel: fetch Debian's cloud kernel, unpack it, make it bootable fast.

Layer: test guest build (imports ``testguest.model``, ``testguest.elf``).
Runs ``apt-cache``/``apt-get download`` (only when no ``.deb`` is cached),
``dpkg-deb`` and ``lz4``; never installs the package. Everything else
(setup header, ``.modinfo``, PVH note) is read from the bytes here.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from corral.testguest import elf
from corral.testguest.model import GuestError, Module

META_PACKAGE = "linux-image-cloud-amd64"
_DEPENDS_RE = re.compile(r"^\s*\|?Depends:\s*(linux-image-[^\s<>]+)\s*$", re.MULTILINE)
_LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
_APT_TIMEOUT = 600.0


def run(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    timeout: float = 120.0,
    stdin: bytes | None = None,
) -> bytes:
    """Run a tool; its stdout, or :class:`GuestError` naming ``what`` failed."""
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, input=stdin, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise GuestError(f"{what}: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise GuestError(f"{what}: {argv[0]} timed out after {timeout:.0f} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise GuestError(f"{what}: {' '.join(argv)} exited {proc.returncode}: {err}")
    return proc.stdout


# --- the package ------------------------------------------------------------------------


def parse_depends(apt_cache_output: str) -> str | None:
    """The versioned kernel package named in ``apt-cache depends`` output."""
    m = _DEPENDS_RE.search(apt_cache_output)
    return m.group(1) if m else None


def _resolve_package() -> str | None:
    try:
        out = run(["apt-cache", "depends", META_PACKAGE], what="resolving the kernel package")
    except GuestError:
        return None
    return parse_depends(out.decode(errors="replace"))


def _apt_download(package: str, into: Path) -> Path | None:
    try:
        run(["apt-get", "download", package], what="downloading", cwd=into, timeout=_APT_TIMEOUT)
    except GuestError:
        return None
    found = sorted(into.glob(f"{package}_*.deb"))
    return found[0] if found else None


def download(dest_dir: Path) -> Path:
    """Fetch the kernel package ``linux-image-cloud-amd64`` depends on.

    Only ``apt-get download`` (no install). If the package name cannot be
    resolved or the download fails, the package lists are refreshed once
    with ``apt-get update`` and both are tried again. The ``.deb`` lands in
    ``dest_dir`` (renamed into place, so a crash leaves no partial file).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest_dir) as tmp:
        tmp_dir = Path(tmp)
        # (apt warns that it downloads unsandboxed into a root-only directory: harmless)
        package = _resolve_package()
        deb = _apt_download(package, tmp_dir) if package else None
        if deb is None:
            run(["apt-get", "update"], what="refreshing package lists", timeout=_APT_TIMEOUT)
            package = _resolve_package()
            if package is None:
                raise GuestError(
                    f"cannot resolve the kernel package: {META_PACKAGE} has no linux-image "
                    "dependency in 'apt-cache depends' (is Debian's main archive configured?)"
                )
            # this time a failure is final, and its message names apt's complaint
            run(
                ["apt-get", "download", package],
                what=f"downloading {package}",
                cwd=tmp_dir,
                timeout=_APT_TIMEOUT,
            )
            found = sorted(tmp_dir.glob(f"{package}_*.deb"))
            if not found:
                raise GuestError(f"apt-get download {package} left no .deb behind")
            deb = found[0]
        final = dest_dir / deb.name
        os.replace(deb, final)
        return final


def unpack(deb: Path, dest: Path) -> None:
    """``dpkg-deb -x``: the package's files under ``dest``, nothing installed."""
    run(["dpkg-deb", "-x", str(deb), str(dest)], what=f"unpacking {deb.name}")


def kernel_files(root: Path) -> tuple[str, Path, Path]:
    """``(version, vmlinuz, modules dir)`` of an unpacked kernel package."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise GuestError(f"expected one boot/vmlinuz-* in the kernel package, got {images}")
    version = images[0].name.removeprefix("vmlinuz-")
    moddir = root / "lib" / "modules" / version
    if not moddir.is_dir():
        moddir = root / "usr" / "lib" / "modules" / version  # merged-/usr packaging
    if not moddir.is_dir():
        raise GuestError(f"kernel package has no modules directory for {version}")
    return version, images[0], moddir


# --- vmlinux ------------------------------------------------------------------------------


def lz4_payload(bzimage: bytes) -> tuple[bytes, int]:
    """The LZ4 frame inside a bzImage and the uncompressed size it announces.

    The boot protocol (2.08+) gives the payload's offset and length in the
    setup header; the kernel's build appends the uncompressed size as a
    trailing little-endian word, which ``lz4`` would take for garbage, so it
    is cut off here.
    """
    if bzimage[0x202:0x206] != b"HdrS":
        raise GuestError("kernel image has no Linux boot setup header")
    (protocol,) = struct.unpack_from("<H", bzimage, 0x206)
    if protocol < 0x208:
        raise GuestError(f"kernel boot protocol {protocol:#x} too old (no payload info)")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start : start + length]
    if len(payload) != length or length < 8:
        raise GuestError("kernel image payload is truncated")
    if payload[:4] != _LZ4_LEGACY_MAGIC:
        raise GuestError(
            f"kernel payload is not LZ4 (magic {payload[:4].hex()}); cannot extract vmlinux"
        )
    (size,) = struct.unpack("<I", payload[-4:])
    return payload[:-4], size


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed, PVH-bootable ``vmlinux`` inside a bzImage.

    Raises :class:`GuestError` if it is not LZ4, does not decompress to
    the announced size, or lacks the PVH note (``-kernel`` could not boot it
    directly).
    """
    frame, size = lz4_payload(bzimage)
    vmlinux = run(["lz4", "-d", "-c"], what="decompressing the kernel", stdin=frame)
    if len(vmlinux) != size:
        raise GuestError(f"vmlinux is {len(vmlinux)} bytes, the bzImage announces {size}")
    try:
        pvh = elf.has_pvh_entry(vmlinux)
    except elf.ElfError as exc:
        raise GuestError(f"extracted vmlinux is not ELF: {exc}") from exc
    if not pvh:
        raise GuestError("extracted vmlinux has no PVH entry note (CONFIG_PVH off?)")
    return vmlinux


# --- modules ------------------------------------------------------------------------------


def modname(filename: str) -> str:
    """The kernel's name for a module file (``net-failover.ko`` → ``net_failover``)."""
    return filename.removesuffix(".ko").replace("-", "_")


def _index(moddir: Path) -> tuple[dict[str, Path], set[str]]:
    """Module name → file, and the names built into the kernel."""
    files: dict[str, Path] = {}
    order = moddir / "modules.order"
    if order.exists():
        rels: Iterable[str] = order.read_text().split()
    else:  # no order file: find them (slower, same result)
        rels = (str(p.relative_to(moddir)) for p in moddir.rglob("*.ko"))
    for rel in rels:
        files[modname(rel.rsplit("/", 1)[-1])] = moddir / rel
    builtin_file = moddir / "modules.builtin"
    builtin = (
        {modname(r.rsplit("/", 1)[-1]) for r in builtin_file.read_text().split()}
        if builtin_file.exists()
        else set()
    )
    return files, builtin


def resolve_modules(moddir: Path, wanted: Sequence[str]) -> list[Module]:
    """``wanted`` and everything they depend on, each after its dependencies.

    Dependencies come from each module's ``.modinfo`` ``depends=`` (Debian
    ships no ``modules.dep``). Modules built into the kernel are skipped.
    Raises :class:`GuestError` for an unknown module or a cycle.
    """
    files, builtin = _index(moddir)
    ordered: list[Module] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        name = modname(name)
        if name in done or name in builtin:
            return
        if name in visiting:
            raise GuestError(f"module dependency cycle: {' -> '.join([*visiting, name])}")
        path = files.get(name)
        if path is None or not path.exists():
            needed_by = f" (needed by {visiting[-1]})" if visiting else ""
            raise GuestError(f"kernel module {name} not found in {moddir}{needed_by}")
        try:
            info = elf.modinfo(path.read_bytes())
        except elf.ElfError as exc:
            raise GuestError(f"cannot read module {path}: {exc}") from exc
        depends = tuple(d for v in info.get("depends", []) for d in v.split(",") if d)
        visiting.append(name)
        for dep in depends:
            visit(dep)
        visiting.pop()
        done.add(name)
        ordered.append(Module(name, path, depends))

    for name in wanted:
        visit(name)
    return ordered

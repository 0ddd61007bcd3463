"""Build the test guest (kernel + initramfs) once, cache it, find it again.

Layer: test guest build (imports ``testguest.kernel``, ``.initscript``,
``.cpio``, ``.elf``, ``.model``). The cache directory holds::

    .lock                       flock(2): one builder at a time
    debs/<package>.deb          the kernel package, kept: later builds are offline
    images/<version>-<recipe>/  vmlinux, initrd
    image.json                  manifest of the current image, written last

Every file is written under a temporary name and renamed into place, so a
reader (:func:`cached`, which takes no lock) sees either the old complete
image or the new one, and a crashed build leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec

from corral.testguest import elf, initscript, kernel
from corral.testguest.cpio import CpioEntry, write_newc
from corral.testguest.model import GuestError, GuestImage, Module

DEFAULT_CACHE = Path("/var/cache/corral/testguest")
CACHE_ENV = "CORRAL_TESTGUEST_CACHE"
BUSYBOX = Path("/bin/busybox")
# Roots; their dependencies come from .modinfo. Input and button first: acpid
# needs the power button's event device before it starts.
WANTED_MODULES = ("evdev", "button", "virtio_pci", "virtio_net", "virtio_blk")
NEEDED_APPLETS = ("acpid", "insmod", "ip", "mkfifo", "mount", "poweroff", "sh")
_FORMAT = "corral-testguest-1"  # bump when the image layout changes


class Manifest(msgspec.Struct, frozen=True):
    recipe: str
    kernel_version: str
    kernel: str  # relative to the cache directory
    initrd: str
    deb: str


def resolve_cache_dir(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$CORRAL_TESTGUEST_CACHE``, else the system default."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else DEFAULT_CACHE


def recipe() -> str:
    """Identity of what goes into the initramfs besides the kernel package.

    A cached image built by another version of the init script is stale.
    """
    h = hashlib.sha256(_FORMAT.encode())
    h.update(initscript.render_init("KVER", WANTED_MODULES).encode())
    h.update(initscript.power_handler().encode())
    return h.hexdigest()[:16]


def cached(cache_dir: Path | None = None) -> GuestImage | None:
    """The image built earlier in the cache, or ``None`` if absent or stale."""
    root = resolve_cache_dir(cache_dir)
    try:
        manifest = msgspec.json.decode((root / "image.json").read_bytes(), type=Manifest)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    if manifest.recipe != recipe():
        return None
    image = GuestImage(root / manifest.kernel, root / manifest.initrd, manifest.kernel_version)
    if not (image.kernel.is_file() and image.initrd.is_file()):
        return None
    return image


def build(cache_dir: Path | None = None, force: bool = False) -> GuestImage:
    """The test guest image, built now unless a current one is cached.

    Needs network (``apt-get download``) only the first time; afterwards the
    kept ``.deb`` is used and apt is not touched. Safe to call from several
    processes at once. Raises :class:`GuestError` naming the missing Debian
    package or the failing step.
    """
    root = resolve_cache_dir(cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GuestError(f"cannot create the test guest cache {root}: {exc}") from exc
    with _locked(root / ".lock"):
        if not force:
            image = cached(root)
            if image is not None:
                return image
        busybox = check_tools()
        _sweep(root, keep=None)
        deb = cached_deb(root / "debs") or kernel.download(root / "debs")
        image = _build_image(root, deb, busybox)
        _sweep(root, keep=image.kernel.parent)
        return image


def check_tools() -> bytes:
    """Check the host tools the build runs; the static busybox binary.

    Raises :class:`GuestError` naming the Debian package to install.
    """
    if shutil.which("lz4") is None:
        raise GuestError("the test guest build needs lz4: install the Debian package lz4")
    if shutil.which("dpkg-deb") is None:
        raise GuestError("the test guest build needs dpkg-deb: install the Debian package dpkg")
    try:
        busybox = BUSYBOX.read_bytes()
        static = elf.is_static(busybox)
    except (OSError, elf.ElfError):
        static = False
    if not static:
        raise GuestError(
            f"the test guest needs a static {BUSYBOX}: install the Debian package busybox-static"
        )
    return busybox


def cached_deb(debs: Path) -> Path | None:
    """The newest kernel package kept in ``debs``."""
    found = sorted(debs.glob("linux-image-*.deb"), key=lambda p: (p.stat().st_mtime, p.name))
    return found[-1] if found else None


def _applets() -> list[str]:
    """Where busybox wants its applets (``bin/sh``, ``sbin/acpid`` …)."""
    try:
        out = kernel.run([str(BUSYBOX), "--list-full"], what="listing busybox applets")
    except GuestError:
        out = b""
    paths = [p.strip("/") for p in out.decode().split() if p.strip("/")]
    names = {p.rsplit("/", 1)[-1] for p in paths}
    missing = [a for a in NEEDED_APPLETS if a not in names]
    if missing:
        raise GuestError(
            f"{BUSYBOX} lacks applets {', '.join(missing)}: install Debian's busybox-static"
        )
    return paths


def initramfs_entries(
    kernel_version: str, modules: Sequence[Module], busybox: bytes, applets: Sequence[str]
) -> list[CpioEntry]:
    """Everything in the guest's initramfs (pure: files are passed as bytes/paths)."""
    init = initscript.render_init(kernel_version, [m.name for m in modules])
    entries = [
        CpioEntry.file("bin/busybox", busybox, 0o755),
        CpioEntry.file("init", init.encode(), 0o755),
        CpioEntry.file(initscript.POWER_HANDLER_PATH, initscript.power_handler().encode(), 0o755),
        CpioEntry.chardev("dev/console", 5, 1, 0o600),
        CpioEntry.chardev("dev/null", 1, 3, 0o666),
        *(CpioEntry.directory(d) for d in ("proc", "sys", "tmp", "var/run", "var/log")),
    ]
    links = sorted(set(applets) - {"bin/busybox"})
    entries += [CpioEntry.symlink(path, "/bin/busybox") for path in links]
    entries += [CpioEntry.file(f"lib/modules/{m.name}.ko", m.path.read_bytes()) for m in modules]
    return entries


def _build_image(root: Path, deb: Path, busybox: bytes) -> GuestImage:
    with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as tmp:
        work = Path(tmp)
        try:
            kernel.unpack(deb, work / "pkg")
        except GuestError as exc:
            raise GuestError(f"{exc} (delete {deb} to download it again)") from exc
        version, vmlinuz, moddir = kernel.kernel_files(work / "pkg")
        vmlinux = kernel.extract_vmlinux(vmlinuz.read_bytes())
        modules = kernel.resolve_modules(moddir, WANTED_MODULES)
        initrd = write_newc(initramfs_entries(version, modules, busybox, _applets()))
        rid = recipe()
        rel = Path("images") / f"{version}-{rid}"
        (root / rel).mkdir(parents=True, exist_ok=True)
        _write_atomic(root / rel / "vmlinux", vmlinux)
        _write_atomic(root / rel / "initrd", initrd)
        manifest = Manifest(rid, version, str(rel / "vmlinux"), str(rel / "initrd"), deb.name)
        _write_atomic(root / "image.json", msgspec.json.encode(manifest) + b"\n")
    return GuestImage(root / rel / "vmlinux", root / rel / "initrd", version)


def _sweep(root: Path, keep: Path | None) -> None:
    """Remove what a killed build left behind and, given ``keep``, older images.

    Runs under the build lock, so no other builder owns these files. Images
    of another recipe are only ever returned to other versions of this code.
    """
    leftovers = [*root.glob(".build-*"), *root.glob("debs/.download-*"), *root.glob("images/*/.*")]
    if keep is not None:
        leftovers += [d for d in root.glob("images/*") if d != keep]
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise GuestError(f"cannot open the build lock {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)

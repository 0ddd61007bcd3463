"""Reading and writing ``config.data`` atomically.

Layer: config storage (imports ``objects``, ``errors``). A write goes to a
temp file in the same directory, is fsynced, renamed over the old file, and
the directory is fsynced, so a crash at any point leaves either the old or
the new config. A file that is corrupt, truncated or written by a newer
Corral is refused with a clear message and is never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from corral.errors import ConfigError, ECode
from corral.objects import CONFIG_VERSION, ConfigData


class _VersionOnly(msgspec.Struct):
    version: int


_version_decoder = msgspec.json.Decoder(_VersionOnly)
_decoder = msgspec.json.Decoder(ConfigData)
_encoder = msgspec.json.Encoder()


def decode(data: bytes, source: str = "config.data") -> ConfigData:
    if not data.strip():
        raise ConfigError(f"{source} is empty (truncated?); refusing to use it")
    try:
        version = _version_decoder.decode(data).version
    except msgspec.ValidationError as err:  # a subclass of DecodeError: catch it first
        raise ConfigError(f"{source} has no valid version field: {err}") from None
    except msgspec.DecodeError as err:
        raise ConfigError(f"{source} is corrupt or truncated: {err}; refusing to use it") from None
    if version > CONFIG_VERSION:
        raise ConfigError(
            f"{source} has version {version}, newer than this Corral understands "
            f"({CONFIG_VERSION}); upgrade Corral, the file was left untouched",
            ECode.ENVIRON,
        )
    if version < 1:
        raise ConfigError(f"{source} has invalid version {version}")
    try:
        cfg = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ConfigError(f"{source} is invalid: {err}; refusing to use it") from None
    return cfg


def encode(cfg: ConfigData) -> bytes:
    return _encoder.encode(cfg)


def load(path: Path) -> ConfigData:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no cluster configuration at {path} (is the cluster initialised?)", ECode.NOENT
        ) from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err}") from err
    return decode(data, str(path))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def save(path: Path, cfg: ConfigData) -> None:
    write_atomic(path, encode(cfg))

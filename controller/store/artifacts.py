"""Lossless encoding of a trial's raw artifacts (transients, RHEED traces, instrument files).

- numpy arrays: `np.save` bytes (allow_pickle=False), so dtype, shape, byte order and every float64 bit
  pattern (NaN payloads, -0.0) come back exactly;
- JSON-able values (dicts, lists, numbers, strings): JSON text;
- `bytes` or a `pathlib.Path` to a file: the raw bytes.

Every payload carries its sha256, checked on read. Payloads above the inline limit live next to the
campaign as `<campaign>.artifacts/<sha256>.<ext>`, written and fsynced before the row that names them
is committed; the content address makes a rewrite of the same data harmless.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from closedloop.controller.store.errors import CampaignFileError

ArtifactKind = Literal["ndarray", "json", "file"]
INLINE_LIMIT_BYTES = 32 * 2**20
_EXTENSIONS: dict[str, str] = {"ndarray": ".npy", "json": ".json", "file": ".bin"}


@dataclass(frozen=True)
class EncodedArtifact:
    kind: ArtifactKind
    payload: bytes
    sha256: str
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        raise TypeError("a numpy array inside a JSON artifact; store each array as its own artifact")
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def encode_artifact(name: str, value: Any) -> EncodedArtifact:
    """Encode one artifact; a clear ValueError names the artifact when its value cannot be stored."""
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        try:
            np.save(buffer, value, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(
                f"artifact {name!r}: cannot store an array of dtype {value.dtype} without pickling ({exc}); "
                "convert it to a numeric or fixed-width string dtype"
            ) from None
        payload = buffer.getvalue()
        return EncodedArtifact("ndarray", payload, _sha256(payload), str(value.dtype), tuple(value.shape))
    if isinstance(value, Path):
        try:
            value = value.read_bytes()
        except OSError as exc:
            raise ValueError(f"artifact {name!r}: cannot read the file {value} ({exc})") from None
    if isinstance(value, bytes | bytearray | memoryview):
        payload = bytes(value)
        return EncodedArtifact("file", payload, _sha256(payload))
    try:
        # Python's JSON writes NaN/Infinity tokens and reads them back: raw data keeps its NaNs.
        text = json.dumps(value, default=_json_default, allow_nan=True, sort_keys=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"artifact {name!r}: {exc}; artifacts must be numpy arrays, bytes, file paths or JSON-able values"
        ) from None
    payload = text.encode("utf-8")
    return EncodedArtifact("json", payload, _sha256(payload))


def decode_artifact(kind: str, payload: bytes) -> Any:
    if kind == "ndarray":
        return np.load(io.BytesIO(payload), allow_pickle=False)
    if kind == "json":
        return json.loads(payload.decode("utf-8"))
    if kind == "file":
        return payload
    raise ValueError(f"unknown artifact kind {kind!r}")


def external_dir_for(campaign_path: Path) -> Path:
    return campaign_path.with_name(campaign_path.name + ".artifacts")


def write_external(campaign_path: Path, encoded: EncodedArtifact) -> str:
    """Write a large payload next to the campaign, durably; returns its path relative to the campaign's folder."""
    folder = external_dir_for(campaign_path)
    folder.mkdir(exist_ok=True)
    target = folder / (encoded.sha256 + _EXTENSIONS[encoded.kind])
    if not (target.exists() and _sha256(target.read_bytes()) == encoded.sha256):
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as handle:
                handle.write(encoded.payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk must not keep what little room is left
            raise
        _fsync_dir(folder)
    return str(target.relative_to(campaign_path.parent))


def read_external(campaign_path: Path, relative: str, sha256: str, where: str) -> bytes:
    """The payload of an external artifact, verified against its recorded sha256.

    Looks first in this campaign's own `.artifacts` folder (so a renamed copy still works), then at the
    path recorded when it was written.
    """
    recorded = campaign_path.parent / relative
    candidates = [external_dir_for(campaign_path) / recorded.name, recorded]
    for candidate in candidates:
        if candidate.is_file():
            payload = candidate.read_bytes()
            if _sha256(payload) != sha256:
                raise CampaignFileError(
                    candidate, f"{where}: content does not match its recorded sha256 {sha256}; the file was altered"
                )
            return payload
    raise CampaignFileError(
        campaign_path,
        f"{where}: the artifact file {recorded.name} is missing; copy the folder "
        f"{external_dir_for(campaign_path).name} along with the campaign file",
    )


def verify_inline(payload: bytes, sha256: str, campaign_path: Path, where: str) -> bytes:
    if _sha256(payload) != sha256:
        raise CampaignFileError(campaign_path, f"{where}: stored bytes do not match their sha256; the file is damaged")
    return payload


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

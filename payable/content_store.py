"""Content-addressed storage of contribution bytes, and fetching content by URI.

On-chain, a contribution names its content by sha256 hash and URI. Locally submitted files live in a
content store under the data directory, addressed as ``cas://sha256/<hex>``; the pipeline also fetches
``file://``, ``http(s)://`` and (with the optional ``s3`` extra, fsspec + s3fs) ``s3://`` URIs.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
import urllib.request
from pathlib import Path

CAS_PREFIX = "cas://sha256/"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class FetchError(RuntimeError):
    """Content could not be fetched; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def sha256_hex(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


class ContentStore:
    """A directory of blobs named by their sha256, sharded by the first two hex digits."""

    def __init__(self, root: Path):
        self.root = root

    def path_for(self, digest_hex: str) -> Path:
        digest = digest_hex.removeprefix("0x").lower()
        if not _SHA256_HEX.fullmatch(digest):
            raise ValueError(f"not a sha256 hex digest: {digest_hex!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> tuple[str, str]:
        """Stores ``data``; returns (content hash ``0x…``, ``cas://`` URI). Idempotent."""
        digest = sha256_hex(data)
        path = self.path_for(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return digest, CAS_PREFIX + digest.removeprefix("0x")

    def fetch(self, uri: str, max_bytes: int, timeout_s: float = 10.0) -> bytes:
        """The bytes behind ``uri``, at most ``max_bytes`` + 1 of them (so callers can tell "too large")."""
        if uri.startswith(CAS_PREFIX):  # the hot path: checked before any URL parsing
            try:
                path = self.path_for(uri.removeprefix(CAS_PREFIX))
            except ValueError as exc:
                raise FetchError("bad_uri", str(exc)) from exc
            return _read_file(path, max_bytes)
        scheme = urllib.parse.urlsplit(uri).scheme
        if scheme == "file":
            return _read_file(Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path)), max_bytes)
        if scheme in ("http", "https"):
            try:
                with urllib.request.urlopen(uri, timeout=timeout_s) as response:
                    return response.read(max_bytes + 1)
            except OSError as exc:
                raise FetchError("fetch_failed", f"{uri}: {exc}") from exc
        if scheme == "s3":
            return _read_s3(uri, max_bytes)
        raise FetchError("unsupported_uri", f"unsupported URI scheme {scheme!r} in {uri!r}")


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise FetchError("content_missing", f"no content at {path}") from exc
    except OSError as exc:
        raise FetchError("fetch_failed", f"{path}: {exc}") from exc


def _read_s3(uri: str, max_bytes: int) -> bytes:
    try:
        import fsspec
    except ImportError as exc:
        raise FetchError("unsupported_uri", "s3:// needs the optional extra: pip install 'payable[s3]'") from exc
    try:
        with fsspec.open(uri, "rb") as stream:
            return stream.read(max_bytes + 1)
    except Exception as exc:
        raise FetchError("fetch_failed", f"{uri}: {exc}") from exc

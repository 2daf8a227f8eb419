"""The retention archive (the "SORM" store, docs/hot-billing.md): every charged CDR file, as
the switch wrote it, kept append-only, encrypted at rest, and chained so that tampering shows.

Layout (docs/hot-billing.md has the whole story)::

    <archive>/
      HEAD                                  the last entry: seq, its SHA-256, an HMAC
      .lock                                 taken (flock) by the one writer while it appends
      2026-11-23/
        0000000001.MSC01_-_0001.20261123_-_1201+0100.arc
        0000000002.MSC01_-_0002.20261123_-_1202+0100.arc
        ...

One entry file per source file (``<seq>.<source name>.arc``, in the directory of the UTC day it
was archived), written once with O_EXCL and made read-only; nothing is ever rewritten but HEAD.
An entry is::

    magic      8 octets   b"OCSARC1\\n"
    length     4 octets   big-endian length of the manifest
    manifest   canonical JSON (sorted keys, no blanks), UTF-8
    ciphertext the source file, AES-256-GCM (nonce in the manifest; the magic, the length and
               the manifest are the associated data, so the manifest cannot change unnoticed)
    tag        16 octets  the GCM tag

The manifest names the file, its switch, its plaintext size and SHA-256, its record counts,
the time it was archived, the key (``key_id``) and ``prev``: the SHA-256 of the whole previous
entry file (64 zeros for the first). Changing a byte anywhere breaks the GCM tag and the next
entry's ``prev``; removing or reordering entries breaks the sequence and the chain; removing
the last entries disagrees with HEAD, whose HMAC needs the key to forge. ``ocs archive verify``
walks the chain and reports the first bad entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from Crypto.Cipher import AES
from Crypto.Random import get_random_bytes

MAGIC: Final = b"OCSARC1\n"
FORMAT: Final = 1
ALGORITHM: Final = "AES-256-GCM"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
GENESIS: Final = "0" * 64
#: Entries are at most this large (the manifest's claimed size is checked against it before
#: anything is read, so a damaged length cannot make verify allocate without bound).
MAX_ENTRY_BYTES: Final = 1 << 31
HEAD_NAME: Final = "HEAD"
_LOCK_NAME: Final = ".lock"
_ENTRY_RE: Final = re.compile(r"^([0-9]{10})\.(.+)\.arc$")
_DAY_RE: Final = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._+\-]")


class ArchiveError(Exception):
    """The archive cannot be written (bad key, broken HEAD); the message says why."""


def parse_key(text: str) -> bytes:
    """A 256-bit key from 64 hex digits (OCS_ARCHIVE_KEY); ValueError naming what is wrong."""
    t = text.strip()
    try:
        key = bytes.fromhex(t)
    except ValueError:
        raise ValueError("must be 64 hex digits (a 256-bit AES key)") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"must be 64 hex digits (a 256-bit AES key), got {len(t)} characters")
    return key


def key_id(key: bytes) -> str:
    """Names a key without revealing it (so verify can say "archived with another key")."""
    return hashlib.sha256(b"ocs-archive-key-id\x00" + key).hexdigest()[:16]


def _head_mac(key: bytes, body: bytes) -> str:
    sub = hashlib.sha256(b"ocs-archive-head\x00" + key).digest()
    return hmac.new(sub, body, hashlib.sha256).hexdigest()


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One archived source file (what its manifest says, and where it is)."""

    seq: int
    source: str
    path: Path
    #: SHA-256 of the whole entry file: the next entry's ``prev``.
    sha256: str
    manifest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    sha256: str
    source: str
    plain_sha256: str


@dataclass(frozen=True, slots=True)
class Problem:
    """The first bad entry: its sequence number (0 for HEAD), path and what is wrong."""

    seq: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"entry {self.seq} ({self.path}): {self.reason}" if self.seq else self.reason


@dataclass(frozen=True, slots=True)
class VerifyResult:
    entries: int
    head: str
    decrypted: bool
    problem: Problem | None

    @property
    def ok(self) -> bool:
        return self.problem is None


# -- reading --------------------------------------------------------------------------------


def _entry_files(root: Path) -> list[tuple[int, Path]]:
    """(seq, path) of every entry file, by seq (and name, so duplicates sit side by side)."""
    out: list[tuple[int, Path]] = []
    if not root.is_dir():
        return out
    for day in root.iterdir():
        if not (day.is_dir() and _DAY_RE.match(day.name)):
            continue
        for f in day.iterdir():
            m = _ENTRY_RE.match(f.name)
            if m and f.is_file():
                out.append((int(m.group(1)), f))
    out.sort(key=lambda x: (x[0], x[1].name))
    return out


def _split(raw: bytes) -> tuple[bytes, dict[str, Any], bytes, bytes]:
    """(associated data, manifest, ciphertext, tag) of an entry; ValueError when malformed."""
    if len(raw) < len(MAGIC) + 4 + TAG_BYTES or not raw.startswith(MAGIC):
        raise ValueError("not an archive entry (bad magic or too short)")
    (mlen,) = struct.unpack_from(">I", raw, len(MAGIC))
    start = len(MAGIC) + 4
    if start + mlen > len(raw):
        raise ValueError("manifest length runs past the end of the file")
    aad = raw[: start + mlen]
    try:
        manifest = json.loads(raw[start : start + mlen].decode())
    except (UnicodeDecodeError, ValueError):
        raise ValueError("manifest is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise ValueError("manifest is not a JSON object")
    size = manifest.get("size")
    if not isinstance(size, int) or size < 0 or start + mlen + size + TAG_BYTES != len(raw):
        raise ValueError("file length does not match the manifest's size (truncated or padded)")
    body = raw[start + mlen :]
    return aad, manifest, body[:-TAG_BYTES], body[-TAG_BYTES:]


def _decrypt(key: bytes, manifest: dict[str, Any], aad: bytes, ct: bytes, tag: bytes) -> bytes:
    try:
        nonce = bytes.fromhex(str(manifest.get("nonce", "")))
    except ValueError:
        raise ValueError("manifest nonce is not hex") from None
    if len(nonce) != NONCE_BYTES:
        raise ValueError("manifest nonce has the wrong length")
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    cipher.update(aad)
    try:
        return cipher.decrypt_and_verify(ct, tag)
    except ValueError:
        raise ValueError("authentication failed: the entry was changed") from None


def read_entry(path: Path, key: bytes) -> tuple[dict[str, Any], bytes]:
    """An entry's manifest and the source file it holds (verified); ValueError if bad."""
    raw = path.read_bytes()
    aad, manifest, ct, tag = _split(raw)
    plain = _decrypt(key, manifest, aad, ct, tag)
    if hashlib.sha256(plain).hexdigest() != manifest.get("sha256"):
        raise ValueError("plaintext does not match the manifest's sha256")
    return manifest, plain


def _read_head(root: Path) -> tuple[dict[str, Any], bytes] | None:
    p = root / HEAD_NAME
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return None
    try:
        head = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        raise ValueError("HEAD is not valid JSON") from None
    if not isinstance(head, dict):
        raise ValueError("HEAD is not a JSON object")
    body = _canonical({k: v for k, v in head.items() if k != "mac"})
    return head, body


def verify(root: str | Path, key: bytes | None = None) -> VerifyResult:
    """Walk the chain from the first entry; the first problem found, if any.

    Without a key, the structure, sequence, chain and HEAD are checked; with it, every entry is
    also decrypted and authenticated and its plaintext hash compared with the manifest.
    """
    root = Path(root)
    files = _entry_files(root)
    prev, count = GENESIS, 0
    last: Path | None = None

    def bad(seq: int, path: Path | str, reason: str) -> VerifyResult:
        return VerifyResult(count, prev, key is not None, Problem(seq, str(path), reason))

    for i, (seq, path) in enumerate(files, start=1):
        if seq != i:
            if seq < i:
                return bad(seq, path, f"sequence number {seq} appears twice")
            return bad(i, path, f"entry {i} is missing (next found is {seq})")
        try:
            raw = path.read_bytes()
            aad, manifest, ct, tag = _split(raw)
        except (OSError, ValueError) as exc:
            return bad(seq, path, str(exc))
        if manifest.get("seq") != seq:
            return bad(seq, path, f"manifest says seq {manifest.get('seq')!r}: file was renamed")
        m = _ENTRY_RE.match(path.name)
        if m is None or m.group(2) != _safe_name(str(manifest.get("source", ""))):
            return bad(seq, path, "file name does not match the manifest's source")
        if manifest.get("prev") != prev:
            return bad(seq, path, "chain broken: prev is not the SHA-256 of the entry before "
                       "(an entry was changed, removed or reordered)")  # fmt: skip
        if key is not None:
            if manifest.get("key_id") != key_id(key):
                return bad(seq, path, f"archived with another key (key_id "
                           f"{manifest.get('key_id')}, given {key_id(key)})")  # fmt: skip
            try:
                plain = _decrypt(key, manifest, aad, ct, tag)
            except ValueError as exc:
                return bad(seq, path, str(exc))
            if hashlib.sha256(plain).hexdigest() != manifest.get("sha256"):
                return bad(seq, path, "plaintext does not match the manifest's sha256")
        prev = hashlib.sha256(raw).hexdigest()
        count, last = seq, path
    try:
        found = _read_head(root)
    except ValueError as exc:
        return bad(0, root / HEAD_NAME, f"{HEAD_NAME}: {exc}")
    if found is None:
        if count:
            return bad(0, root / HEAD_NAME, f"{HEAD_NAME} is missing but there are entries")
        return VerifyResult(0, prev, key is not None, None)
    head, body = found
    if key is not None and not hmac.compare_digest(str(head.get("mac", "")),
                                                   _head_mac(key, body)):  # fmt: skip
        return bad(0, root / HEAD_NAME, f"{HEAD_NAME}: HMAC does not match (changed, or "
                   "another key)")  # fmt: skip
    if head.get("seq") != count or head.get("sha256") != prev:
        where = f" (last entry {last.name})" if last else ""
        return bad(
            0,
            root / HEAD_NAME,
            f"{HEAD_NAME} names entry {head.get('seq')} but the chain ends at {count}{where}: "
            "entries were removed or HEAD was replaced",
        )
    return VerifyResult(count, prev, key is not None, None)


def _safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name) or "_"


# -- writing --------------------------------------------------------------------------------


class Archive:
    """Appends entries to one archive directory. One writer at a time (an flock on
    ``.lock``); appending the file that is already the last entry returns that entry (a
    restart that re-processes its last file archives it once)."""

    def __init__(self, root: str | Path, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ArchiveError("the archive key must be 32 bytes (64 hex digits)")
        self.root = Path(root)
        self.key = key
        self.key_id = key_id(key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / _LOCK_NAME).open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def head(self) -> Head | None:
        """The last entry (None for an empty archive): HEAD, checked with the key, rolled
        forward (under the writer's lock) over an entry written just before a crash that kept
        HEAD from being updated."""
        with self._locked():
            return self._head()

    def _head(self) -> Head | None:
        try:
            found = _read_head(self.root)
        except ValueError as exc:
            raise ArchiveError(f"{self.root / HEAD_NAME}: {exc}") from None
        if found is None:
            if _entry_files(self.root):
                raise ArchiveError(f"{self.root}: entries but no {HEAD_NAME}; run "
                                   "`ocs archive verify` and repair by hand")  # fmt: skip
            head = Head(0, GENESIS, "", "")
        else:
            h, body = found
            if not hmac.compare_digest(str(h.get("mac", "")), _head_mac(self.key, body)):
                raise ArchiveError(f"{self.root / HEAD_NAME}: HMAC does not match (changed, "
                                   "or written with another key)")  # fmt: skip
            head = Head(int(h["seq"]), str(h["sha256"]), str(h.get("source", "")),
                        str(h.get("plain_sha256", "")))  # fmt: skip
        while True:
            nxt = self._find(head.seq + 1)
            if nxt is None:
                return None if head.seq == 0 else head
            raw = nxt.read_bytes()
            try:
                _, manifest, _, _ = _split(raw)
            except ValueError:
                return None if head.seq == 0 else head
            if manifest.get("prev") != head.sha256:
                raise ArchiveError(f"{nxt}: does not follow entry {head.seq}; run "
                                   "`ocs archive verify`")  # fmt: skip
            head = Head(
                head.seq + 1,
                hashlib.sha256(raw).hexdigest(),
                str(manifest.get("source", "")),
                str(manifest.get("sha256", "")),
            )
            self._write_head(head)

    def _find(self, seq: int) -> Path | None:
        prefix = f"{seq:010d}."
        for day in sorted(self.root.iterdir()) if self.root.is_dir() else ():
            if day.is_dir() and _DAY_RE.match(day.name):
                for f in day.iterdir():
                    if f.name.startswith(prefix) and f.name.endswith(".arc"):
                        return f
        return None

    def _write_head(self, head: Head) -> None:
        body = {"seq": head.seq, "sha256": head.sha256, "source": head.source,
                "plain_sha256": head.plain_sha256, "format": FORMAT}  # fmt: skip
        mac = _head_mac(self.key, _canonical(body))
        tmp = self.root / f".{HEAD_NAME}.tmp"
        with tmp.open("wb") as fh:
            fh.write(_canonical({**body, "mac": mac}) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / HEAD_NAME)
        _fsync_dir(self.root)

    def append(
        self,
        *,
        source: str,
        data: bytes,
        switch: str = "",
        records: int = 0,
        rejected: int = 0,
        now_ms: int | None = None,
    ) -> ArchiveEntry:
        """Encrypt ``data`` (the source file ``source``) as the next entry; blocking I/O (call
        it in a thread from async code)."""
        plain_sha = hashlib.sha256(data).hexdigest()
        with self._locked():
            head = self._head()
            if head is not None and head.source == source and head.plain_sha256 == plain_sha:
                path = self._find(head.seq)
                assert path is not None
                _, existing, _, _ = _split(path.read_bytes())
                return ArchiveEntry(head.seq, source, path, head.sha256, existing)
            seq = 1 if head is None else head.seq + 1
            prev = GENESIS if head is None else head.sha256
            when = datetime.now(UTC) if now_ms is None else datetime.fromtimestamp(
                now_ms / 1000, UTC
            )  # fmt: skip
            nonce = get_random_bytes(NONCE_BYTES)
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "seq": seq,
                "source": source,
                "switch": switch,
                "size": len(data),
                "sha256": plain_sha,
                "records": records,
                "rejected": rejected,
                "archived_at": when.isoformat(timespec="milliseconds"),
                "alg": ALGORITHM,
                "key_id": self.key_id,
                "nonce": nonce.hex(),
                "prev": prev,
            }
            mbytes = _canonical(manifest)
            aad = MAGIC + struct.pack(">I", len(mbytes)) + mbytes
            cipher = AES.new(self.key, AES.MODE_GCM, nonce=nonce)
            cipher.update(aad)
            ct, tag = cipher.encrypt_and_digest(data)
            raw = aad + ct + tag
            day = self.root / when.strftime("%Y-%m-%d")
            day.mkdir(parents=True, exist_ok=True)
            path = day / f"{seq:010d}.{_safe_name(source)}.arc"
            # Written aside, then linked into place: an entry appears whole or not at all, and
            # link() fails rather than replace an existing entry (append-only).
            tmp = day / f".{seq:010d}.tmp"
            tmp.unlink(missing_ok=True)  # left by a crash
            with tmp.open("wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.chmod(0o444)
            try:
                os.link(tmp, path)
            finally:
                tmp.unlink()
            _fsync_dir(day)
            digest = hashlib.sha256(raw).hexdigest()
            self._write_head(Head(seq, digest, source, plain_sha))
            return ArchiveEntry(seq, source, path, digest, manifest)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

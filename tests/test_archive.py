"""The retention archive: append-only, AES-GCM at rest, a hash chain that shows tampering."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from Crypto.Cipher import AES

from ocs.cli import main
from ocs.mediation.archive import (
    GENESIS,
    HEAD_NAME,
    MAGIC,
    Archive,
    ArchiveError,
    parse_key,
    read_entry,
    verify,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
T0 = 1_790_000_000_000


def _fill(root: Path, n: int = 4) -> list[Path]:
    arc = Archive(root, KEY)
    return [
        arc.append(source=f"MSC01_-_{i:04d}.20260915_-_1200+0000.ber", data=b"cdr %d " % i * 50,
                   switch="MSC01", records=50, rejected=i % 2, now_ms=T0 + i * 60_000).path
        for i in range(1, n + 1)
    ]  # fmt: skip


def _writable(path: Path) -> None:
    path.chmod(0o644)


def test_entries_chain_and_decrypt(tmp_path: Path) -> None:
    paths = _fill(tmp_path)
    assert [p.name.split(".")[0] for p in paths] == [f"{i:010d}" for i in range(1, 5)]
    assert paths[0].parent.name == "2026-09-21"  # the UTC day it was archived
    result = verify(tmp_path, KEY)
    assert result.ok, result.problem
    assert result.entries == 4 and result.decrypted
    # Without the key: the chain and HEAD are still checked.
    assert verify(tmp_path).ok
    manifest, plain = read_entry(paths[1], KEY)
    assert plain == b"cdr 2 " * 50
    assert manifest["seq"] == 2 and manifest["records"] == 50 and manifest["rejected"] == 0
    first, _ = read_entry(paths[0], KEY)
    assert first["prev"] == GENESIS
    # Encrypted at rest: the plaintext is nowhere in the file; the layout is documented.
    raw = paths[1].read_bytes()
    assert b"cdr 2" not in raw
    (mlen,) = struct.unpack_from(">I", raw, len(MAGIC))
    header = json.loads(raw[len(MAGIC) + 4 : len(MAGIC) + 4 + mlen])
    assert header == manifest
    # An independent check of the cipher: AES-GCM, the header as associated data.
    cipher = AES.new(KEY, AES.MODE_GCM, nonce=bytes.fromhex(manifest["nonce"]))
    cipher.update(raw[: len(MAGIC) + 4 + mlen])
    assert cipher.decrypt_and_verify(raw[len(MAGIC) + 4 + mlen : -16], raw[-16:]) == plain
    # Entries are read-only once written.
    assert not os.stat(paths[0]).st_mode & 0o222


def test_append_is_idempotent_for_the_last_file(tmp_path: Path) -> None:
    arc = Archive(tmp_path, KEY)
    a = arc.append(source="F1.ber", data=b"one")
    again = arc.append(source="F1.ber", data=b"one")  # a restart re-processing its last file
    assert again.seq == a.seq == 1
    b = arc.append(source="F2.ber", data=b"two")
    assert b.seq == 2
    assert verify(tmp_path, KEY).entries == 2


def test_a_changed_byte_is_detected(tmp_path: Path) -> None:
    paths = _fill(tmp_path)
    target = paths[1]
    _writable(target)
    raw = bytearray(target.read_bytes())
    raw[-40] ^= 0x01  # in the ciphertext
    target.write_bytes(bytes(raw))
    result = verify(tmp_path, KEY)
    assert not result.ok and result.problem is not None
    assert result.problem.seq == 2
    assert "authentication failed" in result.problem.reason
    # Without the key the next entry's chain link shows it.
    keyless = verify(tmp_path)
    assert keyless.problem is not None and keyless.problem.seq == 3
    assert "chain broken" in keyless.problem.reason


def test_a_changed_manifest_is_detected(tmp_path: Path) -> None:
    paths = _fill(tmp_path, 2)
    target = paths[1]  # the last entry: no later link, the GCM tag and HEAD catch it
    _writable(target)
    raw = target.read_bytes()
    target.write_bytes(raw.replace(b'"records":50', b'"records":40'))
    result = verify(tmp_path, KEY)
    assert result.problem is not None and result.problem.seq == 2
    assert "authentication failed" in result.problem.reason
    keyless = verify(tmp_path)
    assert keyless.problem is not None and HEAD_NAME in keyless.problem.reason


def test_a_removed_file_is_detected(tmp_path: Path) -> None:
    paths = _fill(tmp_path)
    paths[1].unlink()
    result = verify(tmp_path, KEY)
    assert result.problem is not None
    assert result.problem.seq == 2 and "missing" in result.problem.reason


def test_the_removed_last_file_is_detected(tmp_path: Path) -> None:
    paths = _fill(tmp_path)
    paths[-1].unlink()
    result = verify(tmp_path, KEY)
    assert result.problem is not None and "removed" in result.problem.reason


def test_a_reordered_chain_is_detected(tmp_path: Path) -> None:
    paths = _fill(tmp_path)
    # Swap entries 2 and 3, names and all.
    a, b = paths[1], paths[2]
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a.with_name(b.name.replace("0000000003", "0000000002")))
    tmp.rename(b.with_name(a.name.replace("0000000002", "0000000003")))
    result = verify(tmp_path, KEY)
    assert result.problem is not None and result.problem.seq == 2


def test_a_rebuilt_head_needs_the_key(tmp_path: Path) -> None:
    paths = _fill(tmp_path)
    paths[-1].unlink()
    head = json.loads((tmp_path / HEAD_NAME).read_text())
    head["seq"] = 3  # a forger without the key cannot make the HMAC
    (tmp_path / HEAD_NAME).write_text(json.dumps(head))
    result = verify(tmp_path, KEY)
    assert result.problem is not None and "HMAC" in result.problem.reason


def test_wrong_key(tmp_path: Path) -> None:
    _fill(tmp_path, 1)
    result = verify(tmp_path, OTHER_KEY)
    assert result.problem is not None and "another key" in result.problem.reason
    with pytest.raises(ArchiveError, match="HMAC"):
        Archive(tmp_path, OTHER_KEY).append(source="x.ber", data=b"x")


def test_head_rolls_forward_after_a_crash(tmp_path: Path) -> None:
    _fill(tmp_path, 2)
    saved = (tmp_path / HEAD_NAME).read_bytes()
    Archive(tmp_path, KEY).append(source="F3.ber", data=b"three")
    # As if the process died after writing entry 3 but before HEAD.
    (tmp_path / HEAD_NAME).write_bytes(saved)
    nxt = Archive(tmp_path, KEY).append(source="F4.ber", data=b"four")
    assert nxt.seq == 4
    assert verify(tmp_path, KEY).ok


def test_parse_key() -> None:
    assert parse_key("00" * 32) == bytes(32)
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_key("00" * 16)
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_key("zz" * 32)


def test_cli_verify_and_extract(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "arc"
    paths = _fill(root, 3)
    monkeypatch.delenv("OCS_ARCHIVE_KEY", raising=False)
    assert main(["archive", "verify", "--dir", str(root), "--key", KEY.hex()]) == 0
    assert "OK" in capsys.readouterr().out
    out = tmp_path / "back.ber"
    assert main(["archive", "extract", "2", "--dir", str(root), "--key", KEY.hex(),
                 "--out", str(out)]) == 0  # fmt: skip
    assert out.read_bytes() == b"cdr 2 " * 50
    capsys.readouterr()
    shutil.copy(paths[0], tmp_path / "keep")
    _writable(paths[0])
    raw = paths[0].read_bytes()
    paths[0].write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    monkeypatch.setenv("OCS_ARCHIVE_KEY", KEY.hex())
    assert main(["archive", "verify", "--dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert "entry 1" in err and "authentication failed" in err
    assert main(["archive", "verify", "--dir", str(root), "--key", "abc"]) == 1
    assert "64 hex digits" in capsys.readouterr().err


def test_archive_settings_are_checked() -> None:
    from ocs.config import ConfigError, load_settings

    s = load_settings({"OCS_ARCHIVE_KEY": KEY.hex(), "OCS_MEDIATION_POLL": "0.5"})
    assert (s.archive_key, s.mediation_poll, s.mediation_window) == (KEY.hex(), 0.5, 256)
    assert KEY.hex() not in repr(s)  # a secret
    with pytest.raises(ConfigError, match="OCS_ARCHIVE_KEY: must be 64 hex digits"):
        load_settings({"OCS_ARCHIVE_KEY": "00" * 31})
    with pytest.raises(ConfigError, match="OCS_MEDIATION_POLL"):
        load_settings({"OCS_MEDIATION_POLL": "0"})
    with pytest.raises(ConfigError, match="OCS_MEDIATION_WINDOW"):
        load_settings({"OCS_MEDIATION_WINDOW": "many"})

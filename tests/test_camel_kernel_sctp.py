"""The kernel SCTP path's sends (``OCS_CAMEL_TRANSPORT=sctp``): each M3UA message goes with
``sendmsg`` and an SCTP_SNDRCV ancillary message naming its stream and PPID 3 (RFC 4666
§1.4.7). There is no kernel SCTP on these machines, so this checks what is handed to the
kernel: the struct's layout against <linux/sctp.h> compiled with the C compiler (where there
is one), and what the association passes to ``sendmsg``, on a real socket pair."""

from __future__ import annotations

import asyncio
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from protocols.sigtran.constants import M3UA_PPID
from protocols.sigtran.transport import SCTP_SNDRCV, _KernelAssociation, sndrcv_cmsg

_PROGRAM = r"""
#include <stddef.h>
#include <stdio.h>
#include <netinet/in.h>
#include <linux/sctp.h>
int main(void) {
    struct sctp_sndrcvinfo i;
    printf("%d %zu %zu %zu %zu %zu\n", (int)SCTP_SNDRCV, sizeof i,
           offsetof(struct sctp_sndrcvinfo, sinfo_stream),
           offsetof(struct sctp_sndrcvinfo, sinfo_flags),
           offsetof(struct sctp_sndrcvinfo, sinfo_ppid),
           offsetof(struct sctp_sndrcvinfo, sinfo_assoc_id));
    return 0;
}
"""


def test_the_ancillary_message_names_the_stream_and_ppid_3_in_network_order() -> None:
    level, kind, data = sndrcv_cmsg(5)
    assert (level, kind) == (socket.IPPROTO_SCTP, SCTP_SNDRCV) == (132, 1)
    assert len(data) == 32
    assert struct.unpack_from("=H", data, 0) == (5,)  # sinfo_stream
    assert data[8:12] == M3UA_PPID.to_bytes(4, "big") == b"\0\0\0\x03"  # sinfo_ppid
    assert data[2:8] == bytes(6) and data[12:] == bytes(20)  # ssn, flags, the rest: 0
    assert sndrcv_cmsg(0, ppid=0x01020304)[2][8:12] == b"\1\2\3\4"


def test_the_layout_is_the_kernel_headers(tmp_path: Path) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or not Path("/usr/include/linux/sctp.h").exists():
        pytest.skip("no C compiler or no <linux/sctp.h> (linux-libc-dev)")
    src, exe = tmp_path / "layout.c", tmp_path / "layout"
    src.write_text(_PROGRAM)
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    kind, size, stream, flags, ppid, assoc = (int(x) for x in out.split())
    data = sndrcv_cmsg(0x0102, ppid=0x0A0B0C0D)[2]
    assert (kind, size) == (SCTP_SNDRCV, len(data))
    assert data[stream : stream + 2] == struct.pack("=H", 0x0102)
    assert data[flags : flags + 2] == bytes(2)
    assert data[ppid : ppid + 4] == b"\x0a\x0b\x0c\x0d"
    assert data[assoc : assoc + 4] == bytes(4)


class _Recorder:
    """The receiver the association hands what it reads to."""

    def __init__(self) -> None:
        self.got: list[tuple[int, bytes]] = []
        self.lost = asyncio.Event()

    def data_received(self, stream: int, data: bytes) -> None:
        self.got.append((stream, data))

    def connection_lost(self) -> None:
        self.lost.set()


class _Socket:
    """Stands for the kernel SCTP socket (which this machine has none of): records what
    ``sendmsg`` is given, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[bytes], list[tuple[int, int, bytes]], int]] = []
        self.closed = False

    def sendmsg(self, buffers: list[bytes], ancdata: list[Any], flags: int) -> int:
        self.calls.append((buffers, ancdata, flags))
        return sum(len(b) for b in buffers)

    def close(self) -> None:
        self.closed = True


async def test_each_message_goes_with_its_stream_and_ppid() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    recorder = _Recorder()
    transport, proto = await loop.create_connection(
        lambda: _KernelAssociation(lambda sender: recorder), sock=ours
    )
    try:
        assert isinstance(proto, _KernelAssociation)
        assert proto.sock is not None  # a duplicate of the transport's descriptor
        proto.sock.close()
        fake = proto.sock = _Socket()
        proto.send(0, b"management")
        proto.send(3, b"data on stream 3")
        assert [(c[1], c[2]) for c in fake.calls] == [
            ([sndrcv_cmsg(0)], socket.MSG_DONTWAIT),
            ([sndrcv_cmsg(3)], socket.MSG_DONTWAIT),
        ]
        assert [c[0] for c in fake.calls] == [[b"management"], [b"data on stream 3"]]
        transport.close()
        await asyncio.wait_for(recorder.lost.wait(), 5)
        assert proto.sock is None and fake.closed
    finally:
        transport.close()
        theirs.close()

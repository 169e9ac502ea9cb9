"""Malformed and truncated packets (hypothesis): an ERROR packet or a drop, never a crash.

The listener and a transfer's own socket are both fed; afterwards the server
still serves a real client (tftp-hpa) byte-exact.
"""
import hashlib
import os
import socket
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tftp_support import ServerThread, client_socket, decode, rrq, twin_params
from wwfast._tftp_codec import TftpError, negotiate, parse_request

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)

OPTION_NAMES = st.sampled_from(["blksize", "tsize", "timeout", "windowsize", "BlkSize", "multicast", "x", ""])
OPTION_VALUES = st.one_of(st.sampled_from(["0", "8", "512", "1432", "65464", "65465", "99999999999999", "-1",
                                           "", "abc", "4", "255", "256"]), st.text(max_size=8))
FILES = st.sampled_from(["f1000", "f0", "../f1000", "/etc/passwd", "nope", "sub\\x", "", "f1000\x00x"])


@st.composite
def requests(draw):
    opcode = draw(st.sampled_from([1, 2, 1, 1]))
    options = draw(st.dictionaries(OPTION_NAMES, OPTION_VALUES, max_size=4))
    packet = rrq(draw(FILES), draw(st.sampled_from(["octet", "netascii", "NETASCII", "mail", "bin", ""])),
                 **options)
    packet = opcode.to_bytes(2, "big") + packet[2:]
    cut = draw(st.integers(0, len(packet)))
    return packet[:cut] if draw(st.booleans()) else packet


PACKETS = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda op, body: op.to_bytes(2, "big") + body, st.integers(0, 10), st.binary(max_size=40)),
    requests(),
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tftproot")
    (root / "f1000").write_bytes(os.urandom(1000))
    (root / "f0").write_bytes(b"")
    (root / "big").write_bytes(os.urandom(5000))
    return root


@pytest.fixture(scope="module", params=twin_params())
def server(request, root):
    with ServerThread(root, request.param, timeout=0.2, retries=2) as srv:
        yield srv
        assert srv.alive()
        out = root.parent / "after-fuzz"
        result = subprocess.run(["tftp", "-m", "octet", "127.0.0.1", str(srv.port), "-c", "get", "big", str(out)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256((root / "big").read_bytes()).digest()


def _accepted(packet):
    """True when the server must start a transfer for `packet` (DATA 1 or an OACK)."""
    try:
        request = parse_request(packet)
        negotiate(request.options, 0)
    except TftpError:
        return False
    return request.opcode == 1 and request.filename.replace("\\", "/").lstrip("/") in ("f1000", "f0")


def _drain(s):
    s.setblocking(False)
    try:
        while True:
            s.recv(70000)
    except BlockingIOError:
        pass
    s.settimeout(0.05)


@settings(max_examples=400, deadline=None, database=None)
@given(PACKETS)
def test_codec_raises_only_protocol_errors(packet):
    try:
        request = parse_request(packet)
    except TftpError as e:
        assert 0 <= e.code <= 8
        return
    assert request.opcode in (1, 2) and request.mode in ("octet", "netascii")
    try:
        blksize, windowsize, timeout, oack = negotiate(request.options, 1234)
    except TftpError as e:
        assert e.code == 8
        return
    assert 8 <= blksize <= 65464 and 1 <= windowsize <= 64 and 0 <= timeout <= 255
    assert oack is None or oack[:2] == b"\0\6"


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packet=PACKETS)
def test_listener_answers_error_or_drops(server, packet):
    is_error = packet[:2] == b"\0\5"
    # An answer that must come is waited for (30 s: a backstop on a loaded machine); an ERROR gets none.
    s = client_socket(0.05 if is_error else 30.0)
    try:
        s.sendto(packet, ("127.0.0.1", server.port))
        try:
            reply, tid = s.recvfrom(70000)
        except socket.timeout:
            assert is_error, "the listener dropped a packet it should answer"
            return
        opcode = decode(reply)[0]
        if opcode in (3, 6):
            assert _accepted(packet), (packet, reply)
            s.sendto(b"\0\5\0\0done\0", tid)
        else:
            assert opcode == 5, reply
            assert packet[:2] != b"\0\5", "an ERROR was answered with an ERROR"
    finally:
        s.close()


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packet=PACKETS, from_peer=st.booleans())
def test_transfer_socket_answers_error_or_drops(server, packet, from_peer):
    # DATA 1 and the intruder's error 5 must come: backstops, not deadlines (0.05 s could fail on a loaded
    # machine); the peer's own reply is optional and gets _drain's short wait.
    s, other = client_socket(30.0), client_socket(30.0)
    try:
        s.sendto(rrq("big"), ("127.0.0.1", server.port))
        first, tid = s.recvfrom(70000)
        assert decode(first)[:2] == (3, 1)
        _drain(s)
        (s if from_peer else other).sendto(packet, tid)
        try:
            reply = (s if from_peer else other).recvfrom(70000)[0]
        except socket.timeout:
            reply = None
        if not from_peer:
            assert reply is not None and decode(reply)[:2] == (5, 5)
        elif reply is not None:
            opcode, field, _ = decode(reply)
            if opcode == 3:   # a valid ACK 1 moves on; a timeout resend repeats block 1
                assert packet[:4] == b"\0\4\0\1" or field == 1, (packet, reply)
            else:
                assert (opcode, field) == (5, 4), reply
        s.sendto(b"\0\5\0\0done\0", tid)
    finally:
        s.close()
        other.close()

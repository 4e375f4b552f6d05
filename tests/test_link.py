"""The host bridge library (``firmware.link``) against a fake board on a loopback TCP socket.

The fake board parses requests with its own code (``struct`` and ``binascii.crc_hqx``, not
firmware.link's decoder), keeps a word memory, and injects faults per frame: a dropped answer, a
corrupted answer, a NACK, stale answers and garbage before the real one. Every wait is bounded.
"""

import binascii
import logging
import random
import socket
import struct
import threading
import time

import pytest

from firmware.link import (
    ID_MAGIC,
    MAX_BURST,
    AnswerDecoder,
    Cmd,
    Link,
    LinkError,
    LinkTimeout,
    NackError,
    SerialTransport,
    Status,
    TcpTransport,
    crc16,
    encode_answer,
    encode_request,
)

TIMEOUT = 0.15  # seconds per attempt: the peer answers in well under a millisecond


def _crc(body):
    return binascii.crc_hqx(body, 0xFFFF)  # CRC-16/CCITT-FALSE, the stdlib's implementation


def _answer(cmd, seq, status, count, words=()):
    body = struct.pack("<BBBH", cmd, seq, status, count) + struct.pack(f"<{len(words)}I", *words)
    return b"\x5a" + body + _crc(body).to_bytes(2, "big")


class FakeBoard:
    """A bridge on 127.0.0.1: ``faults[i]`` says what to do with the i-th frame it receives:
    ``"ok"`` (default), ``"drop"`` (execute, no answer), ``"corrupt"`` (execute, answer with a
    bad CRC), ``"nack_crc"`` (answer NACK BAD_CRC, do not execute), ``"stale"`` (send garbage and
    an answer with another seq first), ``"silent"`` (ignore the frame),
    ``("bus_error", k)`` (stop at word k with BUS_ERROR), ``("id", words)`` (custom ID answer)."""

    def __init__(self, faults=None, max_burst=MAX_BURST):
        self.faults = dict(faults or {})
        self.max_burst = max_burst
        self.mem = {}
        self.frames = []  # (cmd, seq, addr, count, words) as received
        self.executed = []  # (cmd, addr, count) actually executed
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(5.0)
        self.port = self.server.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5.0)
        self.server.close()

    def _serve(self):
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        conn.settimeout(0.02)
        buf = bytearray()
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                buf += data
                while (frame := self._take(buf)) is not None:
                    reply = self._handle(*frame)
                    if reply:
                        conn.sendall(reply)

    def _take(self, buf):
        start = buf.find(0xA5)
        if start < 0:
            buf.clear()
            return None
        del buf[:start]
        if len(buf) < 9:
            return None
        cmd, seq, addr, count = struct.unpack_from("<BBIH", buf, 1)
        n = count if cmd in (Cmd.WRITE, Cmd.WRITE_BURST) else 0
        if len(buf) < 11 + 4 * n:
            return None
        body, crc = bytes(buf[1:9 + 4 * n]), int.from_bytes(buf[9 + 4 * n:11 + 4 * n], "big")
        del buf[:11 + 4 * n]
        assert _crc(body) == crc, f"the host sent a frame with a bad CRC: {body.hex()}"
        return cmd, seq, addr, count, struct.unpack_from(f"<{n}I", body, 8)

    def _handle(self, cmd, seq, addr, count, words):
        fault = self.faults.get(len(self.frames), "ok")
        self.frames.append((cmd, seq, addr, count, words))
        if fault == "silent":
            return b""
        if fault == "nack_crc":
            return _answer(cmd, seq, Status.BAD_CRC, 0)
        stop = fault[1] if isinstance(fault, tuple) and fault[0] == "bus_error" else count
        self.executed.append((cmd, addr, count))
        out = []
        if cmd == Cmd.ID:
            out = fault[1] if isinstance(fault, tuple) and fault[0] == "id" else \
                [ID_MAGIC, 1 | self.max_burst << 16, 0xB0A4D]
            stop = len(out)
        elif cmd in (Cmd.WRITE, Cmd.WRITE_BURST):
            for k in range(stop):
                self.mem[addr // 4 + k] = words[k]
        else:
            out = [self.mem.get(addr // 4 + k, 0) for k in range(stop)]
        status = Status.BUS_ERROR if stop != count and cmd != Cmd.ID else Status.ACK
        reply = _answer(cmd, seq, status, stop, out if cmd in (Cmd.ID, Cmd.READ,
                                                                 Cmd.READ_BURST) else ())
        if fault == "drop":
            return b""
        if fault == "corrupt":
            return reply[:-1] + bytes([reply[-1] ^ 0x01])
        if fault == "stale":
            return b"\x00\x13\x5a\x77" + _answer(cmd, (seq - 1) & 0xFF, 0, 0) + reply
        return reply


@pytest.fixture
def board_and_link(request):
    faults = getattr(request, "param", None)
    board = FakeBoard(faults)
    link = Link(TcpTransport(board.port), timeout=TIMEOUT, retries=2)
    yield board, link
    link.close()
    board.close()


# ---- framing --------------------------------------------------------------------------------

def test_worked_example_frames():
    """The examples of docs/bridge-protocol.md, byte for byte; their CRCs from the stdlib."""
    frame = encode_request(Cmd.WRITE, 7, 0x1000, 1, [0xDEADBEEF])
    assert frame == bytes.fromhex("a5 03 07 00100000 0100 efbeadde 4aee")
    assert _crc(bytes.fromhex("03 07 00100000 0100 efbeadde")) == 0x4AEE
    assert encode_answer(Cmd.READ, 8, Status.ACK, 1, [0xDEADBEEF]) == bytes.fromhex(
        "5a 02 08 00 0100 efbeadde 7104")
    assert _crc(bytes.fromhex("02 08 00 0100 efbeadde")) == 0x7104
    assert encode_answer(Cmd.WRITE, 7, Status.BAD_CRC, 0) == bytes.fromhex("5a 03 07 01 0000 99c3")
    assert _crc(bytes.fromhex("03 07 01 0000")) == 0x99C3
    assert encode_request(Cmd.ID, 0, 0, 3) == bytes.fromhex("a5 01 00 00000000 0300 23be")


def test_crc16_matches_the_stdlib_and_the_check_value():
    assert crc16(b"123456789") == 0x29B1  # the catalogue's check value
    rng = random.Random(4)
    for n in (0, 1, 2, 7, 64, 1035):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert crc16(data) == _crc(data), f"{n} bytes"


def test_encoder_refuses_fields_that_do_not_fit():
    with pytest.raises(ValueError, match="seq must fit in 8 unsigned bits, not 256"):
        encode_request(Cmd.READ, 256, 0)
    with pytest.raises(ValueError, match="addr must fit in 32 unsigned bits"):
        encode_request(Cmd.READ, 0, 1 << 32)


def test_answer_decoder_resynchronises():
    good = _answer(Cmd.READ_BURST, 3, 0, 2, [1, 2])
    corrupted = bytearray(_answer(Cmd.READ, 2, 0, 1, [9]))
    corrupted[7] ^= 0x80
    stream = b"\x11\x5a\x22" + bytes(corrupted) + b"\x5a\x04" + good + good[:5]
    decoder = AnswerDecoder()
    got = [a for i in range(len(stream)) for a in decoder.feed(stream[i:i + 1])]
    assert [(a.cmd, a.seq, a.words) for a in got] == [(Cmd.READ_BURST, 3, (1, 2))]
    assert decoder.crc_errors >= 1
    # A header claiming more words than the board can send is garbage, not a wait.
    assert AnswerDecoder(max_count=4).feed(_answer(Cmd.READ_BURST, 1, 0, 5, [0] * 5)) == []


# ---- the link over TCP -------------------------------------------------------------------------

def test_round_trip_and_bursts(board_and_link):
    board, link = board_and_link
    info = link.identify(board=0xB0A4D)
    assert (info.version, info.max_burst, info.board) == (1, MAX_BURST, 0xB0A4D)
    link.write(0x100, 0x12345678)
    assert link.read(0x100) == 0x12345678
    words = [random.Random(6).randrange(1 << 32) for _ in range(600)]
    done = []
    link.write_words(0x4000, words, progress=done.append)
    assert done == [256, 256, 88]
    assert link.read_words(0x4000, 600) == words
    data = bytes(range(256)) * 2
    link.write_bytes(0x8000, data)
    assert link.read_bytes(0x8000, len(data)) == data
    bursts = [(f[0], f[2], f[3]) for f in board.frames if f[0] == Cmd.WRITE_BURST][:3]
    assert bursts == [(Cmd.WRITE_BURST, 0x4000, 256), (Cmd.WRITE_BURST, 0x4400, 256),
                      (Cmd.WRITE_BURST, 0x4800, 88)]
    assert link.retried == 0
    # Sequence numbers advance by one per frame, modulo 256.
    assert [f[1] for f in board.frames] == [k & 0xFF for k in range(len(board.frames))]


def test_identify_lowers_max_burst_to_the_boards():
    board = FakeBoard(max_burst=64)
    try:
        with Link(TcpTransport(board.port), timeout=TIMEOUT) as link:
            assert link.identify().max_burst == 64
            link.write_words(0, list(range(100)))
        assert [f[3] for f in board.frames[1:]] == [64, 36]
    finally:
        board.close()


@pytest.mark.parametrize("board_and_link", [{1: "drop"}], indirect=True)
def test_lost_answer_of_a_read_is_retried(board_and_link, caplog):
    board, link = board_and_link
    link.write(0x20, 77)
    with caplog.at_level(logging.WARNING, logger="firmware.link"):
        assert link.read(0x20) == 77
    assert link.retried == 1
    assert "retrying READ at 0x00000020: no answer within" in caplog.text
    assert "(attempt 2 of 3)" in caplog.text


@pytest.mark.parametrize("board_and_link", [{0: "corrupt"}], indirect=True)
def test_corrupted_answer_of_a_burst_is_retried(board_and_link, caplog):
    board, link = board_and_link
    with caplog.at_level(logging.WARNING, logger="firmware.link"):
        link.write_words(0x40, [1, 2, 3])
    assert "retrying WRITE_BURST of 3 words at 0x00000040: answer failed its CRC check" \
        in caplog.text
    assert board.mem == {0x10: 1, 0x11: 2, 0x12: 3}
    assert [f[1] for f in board.frames] == [0, 1]  # a fresh sequence number per attempt


@pytest.mark.parametrize("board_and_link", [{0: "nack_crc"}], indirect=True)
def test_nack_bad_crc_is_retried_even_when_not_idempotent(board_and_link):
    board, link = board_and_link
    link.write(0x0, 1, idempotent=False)  # a start bit: the NACK proves it was not executed
    assert board.executed == [(Cmd.WRITE, 0, 1)]
    assert link.retried == 1


@pytest.mark.parametrize("board_and_link", [{0: "drop"}], indirect=True)
def test_lost_answer_of_a_non_idempotent_write_is_reported_not_retried(board_and_link):
    board, link = board_and_link
    with pytest.raises(LinkError) as info:
        link.write(0x0, 1, idempotent=False)
    assert str(info.value).startswith("WRITE at 0x00000000 (seq 0): no answer within 0.15 s; "
                                      "not retried because the command is not idempotent")
    assert len(board.frames) == 1


@pytest.mark.parametrize("board_and_link", [{0: "silent", 1: "silent", 2: "silent"}],
                         indirect=True)
def test_no_answer_gives_up_with_what_it_waited_for(board_and_link):
    board, link = board_and_link
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout) as info:
        link.read_words(0x100, 4)
    elapsed = time.monotonic() - t0
    message = str(info.value)
    assert message.startswith("READ_BURST of 4 words at 0x00000100: gave up after 3 attempts on "
                              f"tcp 127.0.0.1:{board.port}: attempt 1 (seq 0): no answer "
                              "within 0.15 s; attempt 2 (seq 1)"), message
    assert "attempt 3 (seq 2): no answer within 0.15 s" in message
    assert len(board.frames) == 3
    assert 3 * TIMEOUT <= elapsed < 3 * TIMEOUT + 1.0


@pytest.mark.parametrize("board_and_link", [{0: ("bus_error", 5)}], indirect=True)
def test_bus_error_names_the_word_and_is_not_retried(board_and_link):
    board, link = board_and_link
    with pytest.raises(NackError) as info:
        link.write_words(0x1000, list(range(8)))
    assert str(info.value) == ("WRITE_BURST of 8 words at 0x00001000 (seq 0): NACK BUS_ERROR "
                               "at word 5 (address 0x00001014)")
    assert info.value.status == Status.BUS_ERROR
    assert len(board.frames) == 1


@pytest.mark.parametrize("board_and_link", [{0: "stale"}], indirect=True)
def test_stale_answers_and_garbage_are_skipped(board_and_link):
    board, link = board_and_link
    board.mem[0x40] = 0xABCD
    assert link.read(0x100) == 0xABCD
    assert link.retried == 0


@pytest.mark.parametrize("board_and_link", [{0: ("id", [0x12345678, 1, 0])},
                                            {0: ("id", [ID_MAGIC, 2 | 256 << 16, 0])}],
                         indirect=True)
def test_identify_rejects_other_devices_and_versions(board_and_link):
    board, link = board_and_link
    with pytest.raises(LinkError, match=r"not an Owlet bridge on tcp 127\.0\.0\.1:\d+: ID answer "
                       r"\['0x12345678', '0x1', '0x0'\], expected word 0 = 0x544c574f|"
                       r"bridge protocol version 2 on tcp 127\.0\.0\.1:\d+, this host speaks 1"):
        link.identify()


def test_identify_wrong_board_and_silent_port():
    board = FakeBoard({1: "silent", 2: "silent", 3: "silent", 4: "silent"})
    link = Link(TcpTransport(board.port), timeout=0.05, retries=3)
    try:
        with pytest.raises(LinkError, match="wrong board on tcp .*: board word 0x000b0a4d, "
                           "expected 0x00000001"):
            link.identify(board=1)
        with pytest.raises(LinkTimeout, match=r"no Owlet bridge answers on tcp .* \(is the "
                           r"bitstream loaded and the port right\?\): ID: gave up after 4"):
            link.identify()
    finally:
        link.close()
        board.close()


def test_tcp_connection_refused_is_a_clear_error():
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(LinkError, match=f"cannot connect to the simulated board at "
                       f"127.0.0.1:{port}"):
        TcpTransport(port, connect_timeout=1.0)


def test_serial_transport_through_pyserial(tmp_path):
    """The pyserial path, through pyserial's own socket:// handler to the fake board."""
    board = FakeBoard({1: "drop"})
    link = Link(SerialTransport(f"socket://127.0.0.1:{board.port}", baudrate=3_000_000),
                timeout=TIMEOUT)
    try:
        assert link.transport.byte_time == pytest.approx(10 / 3e6)
        assert link.identify().board == 0xB0A4D
        link.write_words(0x10, [4, 5, 6])  # its answer is dropped once: retried
        assert link.read_words(0x10, 3) == [4, 5, 6]
        assert link.retried == 1
    finally:
        link.close()
        board.close()
    with pytest.raises(LinkError, match="cannot open serial port .*no-such-tty"):
        SerialTransport(str(tmp_path / "no-such-tty"))

"""Host side of the UART bus bridge: framing, CRC and a :class:`Link` over serial or TCP.

The protocol is documented in ``docs/bridge-protocol.md``; this module is its reference encoder
and decoder, and the RTL (``hdl/bridge.py``) imports its constants from here, so the numbers have
one home. Summary:

- request ``A5 | CMD | SEQ | ADDR (4, LE) | LEN (2, LE) | payload (4·LEN, writes only) | CRC``;
- answer ``5A | CMD | SEQ | STATUS | COUNT (2, LE) | payload (4·COUNT, reads only) | CRC``;
- CRC-16/CCITT-FALSE (:func:`crc16`) over every byte after the sync byte, sent MSB first so that
  the CRC over a whole frame after its sync byte is 0.

A :class:`Link` sends one frame at a time and waits for its answer (stop-and-wait), with a
timeout on every wait whose message names the command, address and sequence number, and retries
what is safe to retry (the protocol document's "Retries and idempotency").
"""

from __future__ import annotations

import enum
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "ANSWER_SYNC",
    "ID_MAGIC",
    "ID_WORDS",
    "MAX_BURST",
    "PROTOCOL_VERSION",
    "READ_COMMANDS",
    "REQUEST_SYNC",
    "WRITE_COMMANDS",
    "Answer",
    "AnswerDecoder",
    "BoardInfo",
    "Cmd",
    "Link",
    "LinkError",
    "LinkTimeout",
    "NackError",
    "SerialTransport",
    "Status",
    "TcpTransport",
    "crc16",
    "encode_answer",
    "encode_request",
]

log = logging.getLogger(__name__)

REQUEST_SYNC = 0xA5  #: first byte of every request (host to board)
ANSWER_SYNC = 0x5A  #: first byte of every answer (board to host)
#: Word 0 of the ID answer: the bytes ``b"OWLT"`` on the wire (little-endian word).
ID_MAGIC = int.from_bytes(b"OWLT", "little")
PROTOCOL_VERSION = 1  #: word 1 of the ID answer, bits [7:0]
ID_WORDS = 3  #: words in an ID answer: magic, version | max_burst << 16, board word
MAX_BURST = 256  #: words per burst of the default bridge (its ID answer has the real value)


class Cmd(enum.IntEnum):
    """Request commands (``docs/bridge-protocol.md``, "Commands")."""

    ID = 0x01  #: identify: 3 words (magic, version | max_burst << 16, board); ADDR, LEN ignored
    READ = 0x02  #: read one word at ADDR (LEN must be 1)
    WRITE = 0x03  #: write one word at ADDR (LEN must be 1, one payload word)
    READ_BURST = 0x04  #: read LEN consecutive words from ADDR (1 <= LEN <= max_burst)
    WRITE_BURST = 0x05  #: write LEN consecutive words from ADDR (1 <= LEN <= max_burst)


#: Requests that carry a payload of 4·LEN bytes.
WRITE_COMMANDS = frozenset({Cmd.WRITE, Cmd.WRITE_BURST})
#: Answers to these carry a payload of 4·COUNT bytes (also a NACK: the words read before it).
READ_COMMANDS = frozenset({Cmd.ID, Cmd.READ, Cmd.READ_BURST})


class Status(enum.IntEnum):
    """Answer status: 0 is ACK, everything else a NACK reason."""

    ACK = 0x00
    BAD_CRC = 0x01  #: the request's CRC did not check; nothing was executed
    UNKNOWN_CMD = 0x02  #: CMD is none of :class:`Cmd`; nothing was executed
    BAD_LENGTH = 0x03  #: LEN out of range for CMD; nothing was executed
    BAD_ADDRESS = 0x04  #: ADDR not word-aligned, or the burst leaves the bus; nothing executed
    BUS_ERROR = 0x05  #: the slave ended word COUNT with ERR_I; words before it were done
    BUS_TIMEOUT = 0x06  #: no ACK_I/ERR_I for word COUNT within the bus timeout
    TRUNCATED = 0x07  #: the frame stopped arriving (receive timeout); nothing was executed


#: NACKs that prove the frame was not executed because of the link: always safe to retry.
_LINK_NACKS = frozenset({Status.BAD_CRC, Status.TRUNCATED})

_CRC_TABLE = []
for _byte in range(256):
    _crc = _byte << 8
    for _ in range(8):
        _crc = ((_crc << 1) ^ 0x1021 if _crc & 0x8000 else _crc << 1) & 0xFFFF
    _CRC_TABLE.append(_crc)
del _byte, _crc


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data``.

    Width 16, polynomial 0x1021, init 0xFFFF, no reflection, no final XOR: check value
    ``crc16(b"123456789") == 0x29B1`` (Ref: Greg Cook, "Catalogue of parametrised CRC
    algorithms", entry CRC-16/IBM-3740, alias CRC-16/CCITT-FALSE). Because nothing is reflected
    or XORed at the end, appending the CRC MSB first makes the CRC of the whole 0 (the residue).
    Table-driven, one byte per step.
    """
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def _u(value: int, bits: int, name: str) -> int:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} must fit in {bits} unsigned bits, not {value!r}")
    return value


def encode_request(cmd: int, seq: int, addr: int = 0, count: int = 1,
                   words: Sequence[int] = ()) -> bytes:
    """One request frame. No semantic checks (tests build bad frames with it): ``words`` is the
    payload as given, whatever ``cmd`` and ``count`` say."""
    body = struct.pack("<BBIH", _u(cmd, 8, "cmd"), _u(seq, 8, "seq"), _u(addr, 32, "addr"),
                       _u(count, 16, "count"))
    body += b"".join(_u(w, 32, "payload word").to_bytes(4, "little") for w in words)
    return bytes([REQUEST_SYNC]) + body + crc16(body).to_bytes(2, "big")


def encode_answer(cmd: int, seq: int, status: int, count: int,
                  words: Sequence[int] = ()) -> bytes:
    """One answer frame (what the bridge sends; for simulated peers and documentation)."""
    body = struct.pack("<BBBH", _u(cmd, 8, "cmd"), _u(seq, 8, "seq"), _u(status, 8, "status"),
                       _u(count, 16, "count"))
    body += b"".join(_u(w, 32, "payload word").to_bytes(4, "little") for w in words)
    return bytes([ANSWER_SYNC]) + body + crc16(body).to_bytes(2, "big")


@dataclass(frozen=True)
class Answer:
    """A decoded answer frame. ``words`` holds the payload (read commands only)."""

    cmd: int
    seq: int
    status: int
    count: int
    words: tuple[int, ...] = ()


class AnswerDecoder:
    """Incremental answer parser: :meth:`feed` bytes in any pieces, get whole answers out.

    Bytes before a sync byte are skipped (counted in ``skipped``). A frame whose CRC fails is
    counted in ``crc_errors`` and the parser resumes at the byte after its sync byte, so a
    corrupted or truncated answer never hides a good one behind it. A header announcing more
    than ``max_count`` payload words is treated as garbage the same way.
    """

    def __init__(self, max_count: int = MAX_BURST):
        self.max_count = max_count
        self.skipped = 0
        self.crc_errors = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Answer]:
        self._buf += data
        out = []
        while True:
            start = self._buf.find(ANSWER_SYNC)
            if start < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                return out
            self.skipped += start
            del self._buf[:start]
            if len(self._buf) < 6:  # sync, cmd, seq, status, count
                return out
            cmd, seq, status, count = struct.unpack_from("<BBBH", self._buf, 1)
            if count > self.max_count:
                self.skipped += 1
                del self._buf[:1]
                continue
            n_words = count if cmd in READ_COMMANDS else 0
            end = 6 + 4 * n_words + 2
            if len(self._buf) < end:
                return out
            if crc16(self._buf[1:end]) != 0:
                self.crc_errors += 1
                del self._buf[:1]
                continue
            words = struct.unpack_from(f"<{n_words}I", self._buf, 6)
            out.append(Answer(cmd, seq, status, count, tuple(words)))
            del self._buf[:end]


# ---- transports -------------------------------------------------------------------------------

class SerialTransport:
    """A USB-serial port through pyserial (8N1, no flow control), ``port`` a device path or a
    pyserial URL.

    FTDI adapters hold short answers for their latency timer (16 ms by default); on Linux set
    ``/sys/bus/usb-serial/devices/ttyUSB0/latency_timer`` to 1 for fast round trips.
    """

    def __init__(self, port: str, baudrate: int = 3_000_000):
        import serial  # pyserial; imported here so TCP-only users do not load it

        try:  # a device path, or any pyserial URL (``socket://127.0.0.1:PORT`` in the tests)
            self.port = serial.serial_for_url(port, baudrate=baudrate, timeout=0,
                                              write_timeout=10.0)
        except (serial.SerialException, ValueError) as exc:
            raise LinkError(f"cannot open serial port {port}: {exc}") from exc
        self.byte_time = 10.0 / baudrate  # start + 8 data + stop bits
        self.name = f"{port} at {baudrate} baud"

    def send(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def recv(self, timeout: float) -> bytes:
        """Bytes received within ``timeout`` seconds (empty if none)."""
        self.port.timeout = max(timeout, 0.0)
        return self.port.read(max(1, self.port.in_waiting))

    def discard_input(self) -> None:
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()


class TcpTransport:
    """The same byte stream over TCP, for the simulated board (``owlet run --sim``)."""

    def __init__(self, port: int, host: str = "127.0.0.1", connect_timeout: float = 5.0):
        try:
            self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise LinkError(f"cannot connect to the simulated board at {host}:{port}: {exc}") \
                from exc
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.byte_time = 0.0
        self.name = f"tcp {host}:{port}"

    def send(self, data: bytes) -> None:
        self.sock.settimeout(10.0)
        self.sock.sendall(data)

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(max(timeout, 1e-4))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return b""
        if not data:
            raise LinkError(f"{self.name}: connection closed by the peer")
        return data

    def discard_input(self) -> None:
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


# ---- the link ------------------------------------------------------------------------------

class LinkError(Exception):
    """The link failed; the message says what was being done."""


class LinkTimeout(LinkError):
    """No (valid) answer came within the timeout, after all retries."""


class NackError(LinkError):
    """The board answered a NACK that retrying cannot fix (a host bug or a bus fault)."""

    def __init__(self, message: str, answer: Answer, addr: int):
        super().__init__(message)
        self.answer, self.status, self.addr = answer, Status(answer.status), addr


@dataclass(frozen=True)
class BoardInfo:
    """What the ID answer says."""

    version: int
    max_burst: int
    board: int


def _describe(cmd: int, addr: int, count: int) -> str:
    name = Cmd(cmd).name if cmd in Cmd._value2member_map_ else f"command 0x{cmd:02x}"
    if cmd == Cmd.ID:
        return name
    if cmd in (Cmd.READ_BURST, Cmd.WRITE_BURST):
        return f"{name} of {count} words at 0x{addr:08x}"
    return f"{name} at 0x{addr:08x}"


class Link:
    """Stop-and-wait bridge client over a transport (:class:`SerialTransport`,
    :class:`TcpTransport`, or anything with ``send``, ``recv(timeout)``, ``discard_input``,
    ``byte_time``).

    Every attempt gets a fresh sequence number and waits ``timeout`` seconds plus the frame's and
    answer's transfer time. Faults are retried up to ``retries`` times when that is safe: a NACK
    BAD_CRC or TRUNCATED always (the frame was not executed), a lost or corrupted answer only for
    idempotent commands. Every retry is logged (``logging``, this module's logger) with what was
    being done, and counted in ``retried``.

    Addresses are byte addresses and must be multiples of 4.
    """

    def __init__(self, transport, *, timeout: float = 0.5, retries: int = 3,
                 max_burst: int = MAX_BURST):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.max_burst = max_burst
        self.seq = 0
        self.frames = 0
        self.retried = 0

    # -- one frame ---------------------------------------------------------------------------
    def transact(self, cmd: int, addr: int = 0, count: int = 1, words: Sequence[int] = (),
                 *, idempotent: bool) -> Answer:
        """Send one request and return its ACK answer, retrying what is safe to retry.

        Raises :class:`NackError` for a NACK that is not a link fault, :class:`LinkTimeout` when
        the last attempt got no answer, :class:`LinkError` otherwise.
        """
        what = _describe(cmd, addr, count)
        answer_words = count if cmd in READ_COMMANDS else 0
        if cmd == Cmd.ID:
            answer_words = ID_WORDS
        faults = []
        timed_out = False
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            seq = self.seq
            self.seq = (self.seq + 1) & 0xFF
            frame = encode_request(cmd, seq, addr, count, words)
            wait = self.timeout + self.transport.byte_time * (len(frame) + 8 + 4 * answer_words)
            self.transport.discard_input()  # stale bytes of earlier attempts
            self.transport.send(frame)
            self.frames += 1
            answer, fault = self._await(cmd, seq, max(count, ID_WORDS), wait)
            timed_out = answer is None and fault.startswith("no answer")
            if answer is not None:
                if answer.status == Status.ACK:
                    return answer
                status = Status(answer.status) if answer.status in Status._value2member_map_ \
                    else None
                if status not in _LINK_NACKS:
                    raise self._nack(what, seq, addr, answer)
                fault = f"NACK {status.name} (not executed)"
            elif not idempotent:
                raise LinkError(
                    f"{what} (seq {seq}): {fault}; not retried because the command is not "
                    f"idempotent: the board may or may not have executed it")
            faults.append(f"attempt {attempt} (seq {seq}): {fault}")
            if attempt < attempts:
                self.retried += 1
                log.warning("retrying %s: %s (attempt %d of %d)", what, fault, attempt + 1,
                            attempts)
        error = LinkTimeout if timed_out else LinkError
        raise error(f"{what}: gave up after {attempts} attempts on {self.transport_name}: "
                    + "; ".join(faults))

    @property
    def transport_name(self) -> str:
        return getattr(self.transport, "name", type(self.transport).__name__)

    def _await(self, cmd, seq, max_count, wait):
        """(answer, None) for the answer to (cmd, seq), or (None, reason) after ``wait`` s."""
        decoder = AnswerDecoder(max_count=max(max_count, self.max_burst))
        others = []
        deadline = time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            for answer in decoder.feed(self.transport.recv(remaining)):
                if answer.cmd == cmd and answer.seq == seq:
                    return answer, None
                others.append(f"{answer.cmd:#04x}/seq {answer.seq}")
        reason = f"no answer within {wait:.2f} s"
        if decoder.crc_errors:
            reason = f"answer failed its CRC check ({decoder.crc_errors}x) within {wait:.2f} s"
        if others:
            reason += f" (ignored answers to other frames: {', '.join(others)})"
        return None, reason

    def _nack(self, what, seq, addr, answer):
        status = Status(answer.status) if answer.status in Status._value2member_map_ else None
        name = status.name if status else f"status 0x{answer.status:02x}"
        where = ""
        if status in (Status.BUS_ERROR, Status.BUS_TIMEOUT) and answer.cmd != Cmd.ID:
            where = f" at word {answer.count} (address 0x{addr + 4 * answer.count:08x})"
        return NackError(f"{what} (seq {seq}): NACK {name}{where}", answer, addr)

    # -- operations ------------------------------------------------------------------------------
    def identify(self, board: int | None = None) -> BoardInfo:
        """Read the ID answer; raise :class:`LinkError` unless it is an Owlet bridge speaking
        :data:`PROTOCOL_VERSION` (and, if given, with board word ``board``). Lowers
        ``max_burst`` to the board's."""
        try:
            answer = self.transact(Cmd.ID, 0, ID_WORDS, idempotent=True)
        except LinkTimeout as exc:
            raise LinkTimeout(f"no Owlet bridge answers on {self.transport_name} "
                              f"(is the bitstream loaded and the port right?): {exc}") from exc
        if len(answer.words) != ID_WORDS or answer.words[0] != ID_MAGIC:
            raise LinkError(f"not an Owlet bridge on {self.transport_name}: ID answer "
                            f"{[hex(w) for w in answer.words]}, expected word 0 = "
                            f"0x{ID_MAGIC:08x} ('OWLT')")
        info = BoardInfo(answer.words[1] & 0xFF, answer.words[1] >> 16, answer.words[2])
        if info.version != PROTOCOL_VERSION:
            raise LinkError(f"bridge protocol version {info.version} on "
                            f"{self.transport_name}, this host speaks {PROTOCOL_VERSION}")
        if board is not None and info.board != board:
            raise LinkError(f"wrong board on {self.transport_name}: board word "
                            f"0x{info.board:08x}, expected 0x{board:08x}")
        self.max_burst = min(self.max_burst, info.max_burst)
        return info

    @staticmethod
    def _check_addr(addr):
        if addr % 4 or not 0 <= addr < 1 << 32:
            raise ValueError(f"address must be a word-aligned 32-bit byte address, not "
                             f"{addr:#x}")

    def read(self, addr: int) -> int:
        """One 32-bit word at byte address ``addr``."""
        self._check_addr(addr)
        return self.transact(Cmd.READ, addr, 1, idempotent=True).words[0]

    def write(self, addr: int, value: int, *, idempotent: bool = True) -> None:
        """Write one word. Pass ``idempotent=False`` for registers with side effects (a start
        bit): such a write is not repeated after a lost answer."""
        self._check_addr(addr)
        self.transact(Cmd.WRITE, addr, 1, [value], idempotent=idempotent)

    def read_words(self, addr: int, n: int,
                   progress: Callable[[int], None] | None = None) -> list[int]:
        """``n`` consecutive words from ``addr`` in bursts of at most ``max_burst``;
        ``progress(words)`` after each burst."""
        self._check_addr(addr)
        out: list[int] = []
        while len(out) < n:
            count = min(self.max_burst, n - len(out))
            out += self.transact(Cmd.READ_BURST, addr + 4 * len(out), count,
                                 idempotent=True).words
            if progress:
                progress(count)
        return out

    def write_words(self, addr: int, words: Iterable[int],
                    progress: Callable[[int], None] | None = None) -> None:
        """Write consecutive words from ``addr`` in bursts (memory: idempotent)."""
        self._check_addr(addr)
        words = list(words)
        for i in range(0, len(words), self.max_burst):
            chunk = words[i:i + self.max_burst]
            self.transact(Cmd.WRITE_BURST, addr + 4 * i, len(chunk), chunk, idempotent=True)
            if progress:
                progress(len(chunk))

    def read_bytes(self, addr: int, n: int, **kw) -> bytes:
        """``n`` bytes (a multiple of 4) from ``addr``, little-endian words."""
        if n % 4:
            raise ValueError(f"byte count must be a multiple of 4, not {n}")
        return struct.pack(f"<{n // 4}I", *self.read_words(addr, n // 4, **kw))

    def write_bytes(self, addr: int, data: bytes, **kw) -> None:
        """Write ``data`` (a multiple of 4 bytes) from ``addr`` as little-endian words."""
        if len(data) % 4:
            raise ValueError(f"byte count must be a multiple of 4, not {len(data)}")
        self.write_words(addr, struct.unpack(f"<{len(data) // 4}I", data), **kw)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""cocotb side of the board cosimulation: clocks, reset, a byte pump between TCP connections on
127.0.0.1 and the bridge's byte streams of :class:`sim.board_top.BoardSimTop`, and fault
injection on the board's side of the socket.

The test :func:`serve` listens on a free port and on a control port, writes both to the
payload's ``port_file`` (``"PORT CONTROL_PORT"``) and serves host connections one after the
other, as a board on a USB-serial port serves one host program after another: host bytes go
into ``host_rx_*`` one per ``clk_sys`` cycle, answer bytes from ``host_tx_*`` go back to the
socket. While no host is connected the board keeps running (a sequencer started by the last
host finishes). The host is anything speaking the bridge protocol over TCP
(``firmware.link.Link`` with ``TcpTransport``): the simulated board sees exactly what the host
sends, no memory is preloaded behind the bridge. The test ends when the control port says
``stop``, or when no host has been connected for ``idle_timeout_s`` (wall); its results are one
dict per connection (simulated time, byte counts).

**Faults** (:class:`Faults`), armed over the control port, each for ``times`` frames that match
its ``cmd`` and ``addr`` (either may be left out):

- ``corrupt_request``: flip the bits of one byte of a request (``byte``: offset after its
  9-byte header, default 0: the first payload byte, or the CRC's first byte): the bridge
  answers NACK BAD_CRC and executes nothing;
- ``corrupt_answer``: flip the bits of an answer's last byte (its CRC): the host sees a bad CRC;
- ``drop_answer``: the bridge executed the request, its answer never reaches the host;
- ``hold`` (``layer``): the sequencer's reads are held while it is at that layer
  (``BoardSimTop.hold_en``), so the layer never finishes; ``release`` lets it go on.

Answers are matched to requests by their SEQ byte (the host uses a fresh one per attempt).
Control commands are one JSON object per line (``{"op": "arm", "kind": ..., ...}``, ``hold``,
``release``, ``fired``, ``stop``), each answered with one JSON line once applied; ``fired``
returns the faults applied so far (kind, command, address), so a test can tell that its fault
really happened.

Timing of the pump (Ref: :class:`sim.board_top.BoardSimTop`): at each falling edge it samples
``host_tx_valid``/``host_tx_data`` (taken at the next rising edge: ``ready`` is always 1) and
offers the next host byte if ``host_rx_rdy`` (a function of registers only) is high, so the
next rising edge takes it. With nothing to send and no answer byte pending it sleeps
``poll_ns`` of simulated time (or until ``host_tx_valid`` rises) between non-blocking socket
reads, so the simulation runs at full speed while the host waits.
"""

import json
import socket
import struct
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from firmware.link import ANSWER_SYNC, READ_COMMANDS, REQUEST_SYNC, WRITE_COMMANDS, Cmd
from sim.runner import load_payload, write_results

__all__ = ["AnswerStream", "Faults", "RequestStream", "serve"]

_REQUEST_HEADER = 9  # sync, cmd, seq, addr (4), len (2)
_ANSWER_HEADER = 6  # sync, cmd, seq, status, count (2)


def _command(value):
    """A command given by name (``"WRITE_BURST"``) or number; None matches any."""
    if value is None or isinstance(value, int):
        return value
    return int(Cmd[value])


class Faults:
    """The armed faults and the log of those applied (module docstring)."""

    KINDS = ("corrupt_request", "corrupt_answer", "drop_answer")

    def __init__(self):
        self.armed, self.fired = [], []

    def arm(self, kind, cmd=None, addr=None, times=1, byte=0):
        if kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(self.KINDS)})")
        self.armed.append({"kind": kind, "cmd": _command(cmd), "addr": addr, "times": times,
                           "byte": byte})

    def take(self, kind, cmd, addr):
        """The armed fault of ``kind`` matching (``cmd``, ``addr``), counted as fired, or None."""
        for fault in self.armed:
            if fault["kind"] == kind and fault["cmd"] in (None, cmd) \
                    and fault["addr"] in (None, addr):
                fault["times"] -= 1
                if fault["times"] <= 0:
                    self.armed.remove(fault)
                self.fired.append({"kind": kind, "cmd": Cmd(cmd).name
                                   if cmd in Cmd._value2member_map_ else cmd, "addr": addr})
                return fault
        return None


class RequestStream:
    """Host bytes on their way to the bridge: cut into request frames (to remember each SEQ's
    command and address, and to corrupt a frame). A frame's 9 header bytes are held until all
    have arrived (the host sends whole frames); bytes outside frames pass as they are."""

    def __init__(self, faults):
        self.faults, self.requests = faults, {}
        self._head, self._left, self._corrupt_at = bytearray(), 0, None

    def feed(self, data):
        out, i = bytearray(), 0
        while i < len(data):
            if self._left:
                chunk = bytearray(data[i:i + self._left])
                if self._corrupt_at is not None:
                    if self._corrupt_at < len(chunk):
                        chunk[self._corrupt_at] ^= 0xFF
                        self._corrupt_at = None
                    else:
                        self._corrupt_at -= len(chunk)
                out += chunk
                self._left -= len(chunk)
                i += len(chunk)
                continue
            byte = data[i]
            i += 1
            if not self._head and byte != REQUEST_SYNC:
                out.append(byte)  # between frames the bridge skips it; so do we
                continue
            self._head.append(byte)
            if len(self._head) == _REQUEST_HEADER:
                _, cmd, seq, addr, count = struct.unpack("<BBBIH", self._head)
                self._left = (4 * count if cmd in WRITE_COMMANDS else 0) + 2
                self.requests[seq] = (cmd, addr)
                fault = self.faults.take("corrupt_request", cmd, addr)
                self._corrupt_at = None if fault is None else min(fault["byte"], self._left - 1)
                out += self._head
                self._head.clear()
        return bytes(out)


class AnswerStream:
    """Bridge bytes on their way to the host: cut into answer frames, each dropped, corrupted or
    passed as the armed faults say."""

    def __init__(self, faults, requests):
        self.faults, self.requests, self._buf = faults, requests, bytearray()

    def feed(self, data):
        self._buf += data
        out = bytearray()
        while self._buf:
            if self._buf[0] != ANSWER_SYNC:  # not an answer: pass it on
                out.append(self._buf.pop(0))
                continue
            if len(self._buf) < _ANSWER_HEADER:
                break
            _, cmd, seq, _, count = struct.unpack_from("<BBBBH", self._buf)
            end = _ANSWER_HEADER + (4 * count if cmd in READ_COMMANDS else 0) + 2
            if len(self._buf) < end:
                break
            frame = bytearray(self._buf[:end])
            del self._buf[:end]
            req_cmd, addr = self.requests.get(seq, (cmd, None))
            if self.faults.take("drop_answer", req_cmd, addr):
                continue
            if self.faults.take("corrupt_answer", req_cmd, addr):
                frame[-1] ^= 0xFF
            out += frame
        return bytes(out)


class _Host:
    """An accepted connection, non-blocking."""

    def __init__(self, conn):
        self.conn = conn
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False

    def recv(self):
        """Bytes available now (empty if none); sets ``closed`` when the host has gone."""
        try:
            data = self.conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            data = b""
        if not data:
            self.closed = True
        return data

    def send(self, data):
        self.conn.setblocking(True)
        try:
            self.conn.sendall(data)
        except OSError:
            self.closed = True
        finally:
            self.conn.setblocking(False)


def _listen():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    return server


def _accept(server):
    try:
        conn, _ = server.accept()
    except (BlockingIOError, InterruptedError):
        return None
    return conn


class _Board:
    """The pump, the control port and the per-connection statistics (module docstring)."""

    def __init__(self, dut, payload):
        self.dut, self.payload = dut, payload
        self.sys_ns = payload["sys_period_ns"]
        self.poll_ns = payload.get("poll_ns", 2000)
        self.idle_limit = payload.get("idle_timeout_s", 600.0)
        self.server, self.control = _listen(), _listen()
        self.clients, self.stopping = [], False
        self.faults, self.sessions = Faults(), []
        with open(payload["port_file"], "w") as f:
            f.write(f"{self.server.getsockname()[1]} {self.control.getsockname()[1]}")

    # -- control port ---------------------------------------------------------------------------
    def poll_control(self):
        """Apply the control commands that have arrived (non-blocking)."""
        while (conn := _accept(self.control)) is not None:
            conn.setblocking(False)
            self.clients.append([conn, bytearray()])
        for client in list(self.clients):
            conn, buf = client
            try:
                data = conn.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                conn.close()
                self.clients.remove(client)
                continue
            buf += data
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                conn.setblocking(True)
                conn.sendall(json.dumps(self._command(json.loads(line))).encode() + b"\n")
                conn.setblocking(False)

    def _command(self, cmd):
        op = cmd.pop("op")
        try:
            if op == "arm":
                self.faults.arm(**cmd)
            elif op == "hold":
                self.dut.hold_layer.value = cmd["layer"]
                self.dut.hold_en.value = 1
            elif op == "release":
                self.dut.hold_en.value = 0
            elif op == "fired":
                return {"ok": True, "fired": self.faults.fired}
            elif op == "stop":
                self.stopping = True
            else:
                raise ValueError(f"unknown control op {op!r}")
        except (KeyError, TypeError, ValueError) as exc:
            return {"ok": False, "error": f"{op}: {exc!r}"}
        return {"ok": True}

    # -- connections ------------------------------------------------------------------------------
    async def run(self):
        """Serve connections until stopped or idle for ``idle_timeout_s``."""
        since = time.monotonic()
        while not self.stopping:
            self.poll_control()
            conn = _accept(self.server)
            if conn is not None:
                await self._serve(_Host(conn))
                since = time.monotonic()
            elif time.monotonic() - since > self.idle_limit:
                cocotb.log.info(f"board cosim: no host for {self.idle_limit:.0f} s; ending")
                break
            else:
                await Timer(self.poll_ns, unit="ns")
        for sock in (self.server, self.control, *(c for c, _ in self.clients)):
            sock.close()

    async def _serve(self, host):
        """Pump one connection until the host closes it; bytes it sent are still delivered."""
        dut, clk = self.dut, self.dut.clk_sys
        requests = RequestStream(self.faults)
        answers = AnswerStream(self.faults, requests.requests)
        t0, start_ns = time.perf_counter(), get_sim_time("ns")
        rx, tx = bytearray(), bytearray()
        driving = False
        stats = {"host_bytes": 0, "answer_bytes": 0}
        last_traffic = time.monotonic()
        while not host.closed or rx or driving:
            if not driving and not rx and not int(dut.host_tx_valid.value):
                data = host.recv()
                if data:
                    rx += requests.feed(data)
                    stats["host_bytes"] += len(data)
                    last_traffic = time.monotonic()
                elif host.closed:
                    break
                elif time.monotonic() - last_traffic > self.idle_limit:
                    raise TimeoutError(f"board cosim: the host sent nothing for "
                                       f"{self.idle_limit:.0f} s (wall) and did not close the "
                                       "connection")
                else:
                    self.poll_control()
                    await First(Timer(self.poll_ns, unit="ns"), RisingEdge(dut.host_tx_valid))
                continue
            await FallingEdge(clk)
            if int(dut.host_tx_valid.value):
                tx.append(int(dut.host_tx_data.value))
            elif tx:  # the end of a run of answer bytes: hand them over
                out = answers.feed(bytes(tx))
                if out and not host.closed:
                    host.send(out)
                stats["answer_bytes"] += len(out)
                tx.clear()
                last_traffic = time.monotonic()
            if rx and int(dut.host_rx_rdy.value):
                dut.host_rx_data.value = rx.pop(0)
                dut.host_rx_valid.value = 1
                driving = True
            else:
                dut.host_rx_valid.value = 0
                driving = False
        dut.host_rx_valid.value = 0
        host.conn.close()
        sim_ns = get_sim_time("ns") - start_ns
        self.sessions.append({**stats, "sim_ns": sim_ns, "sys_cycles": int(sim_ns // self.sys_ns),
                              "wall_s": time.perf_counter() - t0})


@cocotb.test()
async def serve(dut):
    """Serve host connections on the simulated board (see the module docstring)."""
    payload = load_payload()
    Clock(dut.clk_sys, payload["sys_period_ns"], unit="ns", impl="gpi").start()
    Clock(dut.clk_eng, payload["eng_period_ns"], unit="ns", impl="gpi").start()
    for name in ("host_rx_valid", "host_rx_data", "hold_en", "hold_layer"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk_sys, 8)
    dut.rst.value = 0
    await ClockCycles(dut.clk_sys, 8)
    board = _Board(dut, payload)
    await board.run()
    write_results(board.sessions)

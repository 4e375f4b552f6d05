"""Amaranth-simulator tests of the UART and the host bridge (``docs/bridge-protocol.md``).

Oracles written here, independent of the RTL: an 8N1 bit-level line model (drives ``rx`` with a
possibly mistuned bit period, and decodes ``tx`` while checking its exact waveform), a Wishbone
B4 classic slave with a memory, wait states, ERR_I and never-acking regions that also checks the
master's rules, and ``binascii.crc_hqx`` for the CRC. Frames come from ``firmware.link``'s encoder
and answers are decoded by its :class:`~firmware.link.AnswerDecoder` (which checks their CRC).
"""

import binascii
import gc
import random

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from firmware.link import (
    ID_MAGIC,
    PROTOCOL_VERSION,
    AnswerDecoder,
    Cmd,
    Status,
    crc16,
    encode_request,
)
from hdl.bridge import BusBridge, UARTBridge, crc16_update
from hdl.uart import UARTRx, UARTTx

RX_TIMEOUT = 300  # cycles, short so that the truncation tests stay fast
BUS_TIMEOUT = 40
MAX_BURST = 64  # the tests' bridge; the default 256 is checked in test_full_default_burst


# ---- CRC ----------------------------------------------------------------------------------

def _hdl_crc(data):
    """CRC of ``data`` through the RTL's crc16_update, one byte per cycle."""
    m = Module()
    byte, crc = Signal(8), Signal(16, init=0xFFFF)
    m.d.sync += crc.eq(crc16_update(crc, byte))
    out = []

    async def bench(ctx):
        for b in data:
            ctx.set(byte, b)
            await ctx.tick()
        out.append(ctx.get(crc))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out[0]


def test_crc16_check_value():
    # The catalogue's check value of CRC-16/CCITT-FALSE (CRC-16/IBM-3740): 0x29B1.
    assert crc16(b"123456789") == 0x29B1
    assert _hdl_crc(b"123456789") == 0x29B1
    # Appending the CRC MSB first leaves the residue 0 (what the RTL checks).
    assert crc16(b"123456789" + bytes([0x29, 0xB1])) == 0
    rng = random.Random(5)
    data = bytes(rng.randrange(256) for _ in range(40))
    assert _hdl_crc(data) == binascii.crc_hqx(data, 0xFFFF) == crc16(data)


# ---- 8N1 line model -------------------------------------------------------------------------

def _bits(byte):
    return [0] + [byte >> k & 1 for k in range(8)] + [1]


async def line_send(ctx, pin, data, period, gap=0.0):
    """Drive ``pin`` with 8N1 frames of ``data``: each bit ``period`` cycles (may be fractional:
    a mistuned host), ``gap`` idle bit times between bytes."""
    t, edge = 0.0, 0
    for byte in data:
        for bit in _bits(byte):
            t += period
            ctx.set(pin, bit)
            n = round(t) - edge
            edge += n
            await ctx.tick().repeat(n)
        if gap:
            t += gap * period
            ctx.set(pin, 1)
            n = round(t) - edge
            edge += n
            await ctx.tick().repeat(n)
    ctx.set(pin, 1)


async def line_receive(ctx, pin, divisor, out, n_bytes=None, limit=None, exact=True):
    """Decode 8N1 bytes from ``pin`` into ``out`` as (byte, cycle of its start bit). With
    ``exact``, check the waveform cycle by cycle: the start bit, each data bit and the stop bit
    hold for exactly ``divisor`` cycles; without, sample the middle of each bit only (fast).
    Returns after ``n_bytes`` bytes (never if None); fails after ``limit`` cycles."""
    cycle = 0
    while n_bytes is None or len(out) < n_bytes:
        if ctx.get(pin):
            if exact:
                await ctx.tick()
                cycle += 1
                assert limit is None or cycle < limit, \
                    f"tx: {len(out)} of {n_bytes} bytes after {limit} cycles"
            else:
                await ctx.changed(pin)  # just after the clock edge that lowered it
            continue
        start, levels = cycle, []
        if exact:
            for _ in range(10 * divisor):
                levels.append(ctx.get(pin))
                await ctx.tick()
                cycle += 1
            bits = [levels[k * divisor] for k in range(10)]
            expected = [b for b in bits for _ in range(divisor)]
            assert levels == expected, f"tx byte {len(out)}: a bit does not last {divisor} cycles"
        else:
            await ctx.tick().repeat(divisor // 2)
            bits = [ctx.get(pin)]
            for _ in range(9):
                await ctx.tick().repeat(divisor)
                bits.append(ctx.get(pin))
            await ctx.tick().repeat(divisor - divisor // 2)
        assert bits[0] == 0 and bits[9] == 1, f"tx byte {len(out)}: framing {bits}"
        out.append((sum(b << k for k, b in enumerate(bits[1:9])), start))


# ---- UART ---------------------------------------------------------------------------------

UART_BYTES = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0xA5, 0x5A]) + bytes(
    random.Random(1).randrange(256) for _ in range(8))


@pytest.mark.parametrize("divisor,error", [
    (16, 0.0),  # 3 Mbaud at 48 MHz
    (16, +0.04), (16, -0.04),  # a host 4 % fast or slow
    (17, -0.02),  # 3 Mbaud at 50 MHz: 17 cycles is 2 % slow against 16.67
    (33, +0.01),  # 3 Mbaud at 100 MHz
    (4, 0.0),  # MIN_DIVISOR: 12 Mbaud at 48 MHz
])
def test_uart_rx_against_line_model(divisor, error):
    dut = UARTRx(divisor)
    got, errors = [], []

    async def host(ctx):
        await ctx.tick().repeat(3)
        await line_send(ctx, dut.rx, UART_BYTES, divisor * (1 + error))
        await ctx.tick().repeat(2 * divisor)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, payload, ferr, ovr in ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.frame_error, dut.overrun):
            if valid:
                got.append(payload)
            if ferr or ovr:
                errors.append((len(got), ferr, ovr))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert not errors, f"divisor {divisor}, baud error {error:+.0%}: errors {errors}"
    assert bytes(got) == UART_BYTES, f"divisor {divisor}, baud error {error:+.0%}"


def test_uart_rx_glitch_break_and_overrun():
    d = 16
    dut = UARTRx(d)
    got, ferrs, ovrs = [], [], []

    async def host(ctx):
        await ctx.tick().repeat(5)
        ctx.set(dut.rx, 0)  # a glitch shorter than half a bit: no start bit
        await ctx.tick().repeat(d // 2 - 3)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3 * d)
        ctx.set(dut.rx, 0)  # a break: 3 byte times low, one frame error and no byte
        await ctx.tick().repeat(30 * d)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * d)
        await line_send(ctx, dut.rx, b"\x3c", d)
        await ctx.tick().repeat(2 * d)
        ctx.set(dut.o.ready, 0)  # nobody takes bytes: the second is an overrun
        await line_send(ctx, dut.rx, b"\x11\x22", d)
        await ctx.tick().repeat(2 * d)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        async for _, _, valid, ready, payload, ferr, ovr in ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload, dut.frame_error, dut.overrun):
            if valid and ready:
                got.append(payload)
            ferrs.append(ferr)
            ovrs.append(ovr)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(sink, background=True)
    sim.run()
    assert got == [0x3C], f"bytes {got}: the glitch or the break produced a byte"
    assert sum(ferrs) == 1, f"{sum(ferrs)} frame errors for one break"
    assert sum(ovrs) == 1, f"{sum(ovrs)} overruns for one byte nobody took"


@pytest.mark.parametrize("divisor", [16, 5])
def test_uart_tx_waveform(divisor):
    dut = UARTTx(divisor)
    data = bytes([0x00, 0xFF, 0xA5, 0x3C])
    got = []

    async def source(ctx):
        for b in data:  # back to back: the stop bit of one is followed by the next start bit
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, b)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def line(ctx):
        await line_receive(ctx, dut.tx, divisor, got, len(data), 100 * divisor)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(line)
    sim.run()
    assert bytes(b for b, _ in got) == data
    # Back to back: a start bit follows each stop bit at once, 10 bit times per byte.
    starts = [t for _, t in got]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps == [10 * divisor] * (len(data) - 1)


def test_uart_loopback_at_3mbaud_48mhz():
    """UARTRx → UARTTx at divisor 16: the line model sends, and decodes what comes back."""
    d = 16
    m = Module()
    m.submodules.rx = rx = UARTRx(d)
    m.submodules.tx = tx = UARTTx(d)
    wiring.connect(m, rx.o, tx.i)
    data = UART_BYTES
    got = []

    async def host(ctx):
        await ctx.tick().repeat(4)
        await line_send(ctx, rx.rx, data, d)

    async def line(ctx):
        await line_receive(ctx, tx.tx, d, got, len(data), 12 * d * (len(data) + 4))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(line)
    sim.run()
    assert bytes(b for b, _ in got) == data


# ---- Wishbone slave model ----------------------------------------------------------------------

class WishboneMemory:
    """Wishbone B4 classic slave with a word memory, as a testbench.

    ``latency`` wait states per word (0: ACK_I in the cycle STB_O is first seen), or a function
    of the word address giving them. Words in
    ``err`` terminate with ERR_I, words in ``hang`` never terminate. Logs every completed access
    as (``"W"``/``"R"``, word address, data) and every abort (STB_O dropped without a termination)
    with the cycles it waited. Checks the master's rules (B4 3.1.3): STB_O only with CYC_O, and
    address, WE and data held while a phase waits.
    """

    def __init__(self, bus, bus_err, *, latency=1, err=(), hang=(), words=None):
        self.bus, self.bus_err, self.latency = bus, bus_err, latency
        self.err, self.hang = set(err), set(hang)
        self.mem = dict(words or {})
        self.log, self.aborts, self.violations = [], [], []
        self.cycles_active = 0

    async def run(self, ctx):
        bus = self.bus
        waited, phase = 0, None
        while True:
            if phase is None and not ctx.get(bus.cyc):
                await ctx.changed(bus.cyc)  # idle bus: wake up just after CYC_O rises
            else:
                await ctx.tick()
            ctx.set(bus.ack, 0)
            ctx.set(self.bus_err, 0)
            cyc, stb = ctx.get(bus.cyc), ctx.get(bus.stb)
            if stb and not cyc:
                self.violations.append("STB_O without CYC_O")
            if cyc:
                self.cycles_active += 1
            if not (cyc and stb):
                if phase is not None:
                    self.aborts.append((phase[1], waited))
                waited, phase = 0, None
                continue
            now = (ctx.get(bus.we), ctx.get(bus.adr), ctx.get(bus.dat_w) if ctx.get(bus.we)
                   else None)
            if phase is not None and now != phase:
                self.violations.append(f"signals changed during a phase: {phase} -> {now}")
            phase = now
            latency = self.latency(now[1]) if callable(self.latency) else self.latency
            if now[1] in self.hang or waited < latency:
                waited += 1
                continue
            we, adr, dat = now
            if adr in self.err:
                ctx.set(self.bus_err, 1)
                self.log.append(("E", adr, None))
            elif we:
                self.mem[adr] = dat
                self.log.append(("W", adr, dat))
            else:
                ctx.set(bus.dat_r, self.mem.get(adr, 0))
                self.log.append(("R", adr, self.mem.get(adr, 0)))
            ctx.set(bus.ack, int(adr not in self.err))
            waited, phase = 0, None


# ---- the bridge on byte streams -----------------------------------------------------------------

class BridgeRun:
    """Runs a script against :class:`BusBridge` on byte streams, a byte per cycle.

    Steps: ``("send", bytes)``, ``("idle", cycles)``, ``("answer", label)`` (collect one answer,
    decoded by firmware.link; fails naming ``label`` if none comes), ``("quiet", cycles)`` (no
    answer byte may come).
    """

    def __init__(self, script, *, addr_width=16, board=0x0B0A_0D01, **mem_kw):
        self.dut = BusBridge(max_burst=MAX_BURST, addr_width=addr_width, rx_timeout=RX_TIMEOUT,
                             bus_timeout=BUS_TIMEOUT, board=board)
        self.memory = WishboneMemory(self.dut.bus, self.dut.bus_err, **mem_kw)
        self.script = script
        self.answers = {}
        self.cycles = {}  # label: cycles from the frame's first byte to the answer's last
        self.decoder = AnswerDecoder(max_count=1024)
        sim = Simulator(self.dut)
        sim.add_clock(1e-6)
        sim.add_testbench(self._host)
        sim.add_testbench(self.memory.run, background=True)
        sim.run()
        assert not self.memory.violations, self.memory.violations[:3]

    async def _host(self, ctx):
        dut, cycle, sent_at = self.dut, 0, 0
        ctx.set(dut.tx.ready, 1)
        for step, arg in self.script:
            if step == "send":
                sent_at = cycle
                for b in arg:
                    ctx.set(dut.rx.valid, 1)
                    ctx.set(dut.rx.payload, b)
                    while True:
                        _, _, ready, tx_valid = await ctx.tick().sample(dut.rx.ready, dut.tx.valid)
                        cycle += 1
                        assert not tx_valid, f"answer byte while sending (cycle {cycle})"
                        if ready:
                            break
                ctx.set(dut.rx.valid, 0)
            elif step == "idle":
                await ctx.tick().repeat(arg)
                cycle += arg
            elif step == "quiet":
                for _ in range(arg):
                    _, _, valid = await ctx.tick().sample(dut.tx.valid)
                    cycle += 1
                    assert not valid, f"an answer byte came where none was due (cycle {cycle})"
            elif step == "answer":
                for _ in range(4000 + 40 * MAX_BURST):
                    _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
                    cycle += 1
                    if valid:
                        answers = self.decoder.feed(bytes([payload]))
                        if answers:
                            assert len(answers) == 1
                            self.answers[arg] = answers[0]
                            self.cycles[arg] = cycle - sent_at
                            break
                else:
                    raise AssertionError(f"no answer to {arg} (decoder: {self.decoder.crc_errors} "
                                         f"CRC errors, {self.decoder.skipped} bytes skipped)")


def _frame(cmd, seq, addr=0, count=1, words=()):
    return ("send", encode_request(cmd, seq, addr, count, words))


def _expect(run, label, cmd, seq, status, count, words=()):
    a = run.answers[label]
    got = (Cmd(a.cmd).name if a.cmd in Cmd._value2member_map_ else a.cmd, a.seq,
           Status(a.status).name, a.count, list(a.words))
    want = (Cmd(cmd).name if cmd in Cmd._value2member_map_ else cmd, seq, Status(status).name,
            count, list(words))
    assert got == want, f"answer to {label}: expected {want}, got {got}"


def test_id_read_write_and_bursts():
    rng = random.Random(2)
    burst = [rng.randrange(1 << 32) for _ in range(MAX_BURST)]
    run = BridgeRun([
        _frame(Cmd.ID, 0, 0, 3), ("answer", "ID"),
        _frame(Cmd.WRITE, 1, 0x1000, 1, [0xDEADBEEF]), ("answer", "WRITE 0x1000"),
        _frame(Cmd.READ, 2, 0x1000), ("answer", "READ 0x1000"),
        _frame(Cmd.WRITE_BURST, 3, 0x2000, MAX_BURST, burst), ("answer", "WRITE_BURST 0x2000"),
        _frame(Cmd.READ_BURST, 4, 0x2000, MAX_BURST), ("answer", "READ_BURST 0x2000"),
        _frame(Cmd.READ_BURST, 5, 0x2004, 3), ("answer", "READ_BURST 0x2004"),
    ], latency=1)
    _expect(run, "ID", Cmd.ID, 0, Status.ACK, 3,
            [ID_MAGIC, PROTOCOL_VERSION | MAX_BURST << 16, 0x0B0A_0D01])
    _expect(run, "WRITE 0x1000", Cmd.WRITE, 1, Status.ACK, 1)
    _expect(run, "READ 0x1000", Cmd.READ, 2, Status.ACK, 1, [0xDEADBEEF])
    _expect(run, "WRITE_BURST 0x2000", Cmd.WRITE_BURST, 3, Status.ACK, MAX_BURST)
    _expect(run, "READ_BURST 0x2000", Cmd.READ_BURST, 4, Status.ACK, MAX_BURST, burst)
    _expect(run, "READ_BURST 0x2004", Cmd.READ_BURST, 5, Status.ACK, 3, burst[1:4])
    # The bus saw exactly these accesses, in order, at word addresses (byte address / 4).
    expected_log = ([("W", 0x400, 0xDEADBEEF), ("R", 0x400, 0xDEADBEEF)]
                    + [("W", 0x800 + k, w) for k, w in enumerate(burst)]
                    + [("R", 0x800 + k, w) for k, w in enumerate(burst)]
                    + [("R", 0x801 + k, w) for k, w in enumerate(burst[1:4])])
    assert run.memory.log == expected_log


def test_burst_cycles_per_word():
    """A burst is one block cycle: CYC_O high for LEN words, one word per ACK_I, so a burst costs
    (wait states + 1) cycles per word. Three regions of the memory, 0, 1 and 3 wait states."""
    n = 32
    words = list(range(100, 100 + n))
    script = []
    for region in range(3):
        base = region * 0x1000
        script += [_frame(Cmd.WRITE_BURST, 2 * region, base, n, words), ("answer", f"W{region}"),
                   _frame(Cmd.READ_BURST, 2 * region + 1, base, n), ("answer", f"R{region}")]
    run = BridgeRun(script, latency=lambda adr: (0, 1, 3)[adr >> 10])
    request, answer = 9 + 4 * n + 2, 8
    for region, (latency, per_word) in enumerate([(0, 1), (1, 2), (3, 4)]):
        _expect(run, f"R{region}", Cmd.READ_BURST, 2 * region + 1, Status.ACK, n, words)
        # Byte-per-cycle stream: the request's bytes, a few cycles of decode, the bus, the answer.
        overhead = run.cycles[f"W{region}"] - request - n * per_word - answer
        assert 0 <= overhead <= 8, \
            f"write burst, {latency} wait states: {overhead} cycles beyond bytes and bus"
    # CYC_O cycles of all six bursts: (wait states + 1) per word, nothing between words.
    assert run.memory.cycles_active == 2 * n * (1 + 2 + 4)


def test_bad_crc_unknown_command_bad_length_bad_address():
    good = encode_request(Cmd.WRITE, 7, 0x40, 1, [0x11111111])
    corrupted = bytearray(good)
    corrupted[9] ^= 0x04  # one payload bit
    run = BridgeRun([
        ("send", bytes(corrupted)), ("answer", "corrupted WRITE"),
        _frame(0x42, 8, 0x40, 1), ("answer", "command 0x42"),
        _frame(Cmd.READ, 9, 0x40, 2), ("answer", "READ with LEN 2"),
        _frame(Cmd.READ_BURST, 10, 0x40, 0), ("answer", "READ_BURST with LEN 0"),
        _frame(Cmd.READ_BURST, 11, 0x40, MAX_BURST + 1), ("answer", "READ_BURST too long"),
        _frame(Cmd.WRITE_BURST, 12, 0x40, MAX_BURST + 2, [5] * (MAX_BURST + 2)),
        ("answer", "WRITE_BURST too long"),
        _frame(Cmd.WRITE, 13, 0x42, 1, [6]), ("answer", "WRITE misaligned"),
        _frame(Cmd.READ_BURST, 14, (1 << 18) - 8, 3), ("answer", "READ_BURST past the top"),
        _frame(Cmd.READ, 15, 1 << 18), ("answer", "READ above the bus"),
        _frame(Cmd.READ_BURST, 16, (1 << 18) - 8, 2), ("answer", "READ_BURST to the top"),
        _frame(Cmd.WRITE, 17, 0x40, 1, [0x22222222]), ("answer", "good WRITE"),
    ], addr_width=16, words={(1 << 16) - 2: 0xA, (1 << 16) - 1: 0xB})
    _expect(run, "corrupted WRITE", Cmd.WRITE, 7, Status.BAD_CRC, 0)
    _expect(run, "command 0x42", 0x42, 8, Status.UNKNOWN_CMD, 0)
    _expect(run, "READ with LEN 2", Cmd.READ, 9, Status.BAD_LENGTH, 0)
    _expect(run, "READ_BURST with LEN 0", Cmd.READ_BURST, 10, Status.BAD_LENGTH, 0)
    _expect(run, "READ_BURST too long", Cmd.READ_BURST, 11, Status.BAD_LENGTH, 0)
    _expect(run, "WRITE_BURST too long", Cmd.WRITE_BURST, 12, Status.BAD_LENGTH, 0)
    _expect(run, "WRITE misaligned", Cmd.WRITE, 13, Status.BAD_ADDRESS, 0)
    _expect(run, "READ_BURST past the top", Cmd.READ_BURST, 14, Status.BAD_ADDRESS, 0)
    _expect(run, "READ above the bus", Cmd.READ, 15, Status.BAD_ADDRESS, 0)
    _expect(run, "READ_BURST to the top", Cmd.READ_BURST, 16, Status.ACK, 2, [0xA, 0xB])
    _expect(run, "good WRITE", Cmd.WRITE, 17, Status.ACK, 1)
    # Nothing rejected reached the bus; the payload of the rejected writes was drained.
    assert run.memory.log == [("R", (1 << 16) - 2, 0xA), ("R", (1 << 16) - 1, 0xB),
                              ("W", 0x10, 0x22222222)]


def test_bus_error_and_timeout():
    run = BridgeRun([
        _frame(Cmd.WRITE_BURST, 1, 0x100, 8, list(range(8))), ("answer", "WRITE_BURST err@5"),
        _frame(Cmd.READ_BURST, 2, 0x100, 8), ("answer", "READ_BURST err@5"),
        _frame(Cmd.READ_BURST, 3, 0x200, 4), ("answer", "READ_BURST hang@2"),
        _frame(Cmd.WRITE, 4, 0x208, 1, [7]), ("answer", "WRITE hang"),
        _frame(Cmd.READ, 5, 0x100), ("answer", "READ after the faults"),
    ], err={0x40 + 5}, hang={0x80 + 2}, words={0x80: 0xAA, 0x81: 0xBB})
    _expect(run, "WRITE_BURST err@5", Cmd.WRITE_BURST, 1, Status.BUS_ERROR, 5)
    _expect(run, "READ_BURST err@5", Cmd.READ_BURST, 2, Status.BUS_ERROR, 5, range(5))
    _expect(run, "READ_BURST hang@2", Cmd.READ_BURST, 3, Status.BUS_TIMEOUT, 2, [0xAA, 0xBB])
    _expect(run, "WRITE hang", Cmd.WRITE, 4, Status.BUS_TIMEOUT, 0)
    _expect(run, "READ after the faults", Cmd.READ, 5, Status.ACK, 1, [0])
    # The burst stopped at the faulting word: words 6 and 7 were never written.
    assert [e for e in run.memory.log if e[0] == "W"] == [("W", 0x40 + k, k) for k in range(5)]
    # Each hang was abandoned after exactly BUS_TIMEOUT cycles of STB_O.
    assert run.memory.aborts == [(0x82, BUS_TIMEOUT), (0x82, BUS_TIMEOUT)]


def test_truncated_frames_and_garbage():
    write = encode_request(Cmd.WRITE_BURST, 20, 0x300, 4, [1, 2, 3, 4])
    huge = bytearray(encode_request(Cmd.WRITE_BURST, 21, 0x300, 1, [9]))
    huge[7:9] = (0xFFF0).to_bytes(2, "little")  # LEN hit by noise: the decoder waits for more
    garbage = bytes(random.Random(3).choice([b for b in range(256) if b != 0xA5])
                    for _ in range(50))
    run = BridgeRun([
        ("send", write[:15]), ("answer", "WRITE_BURST cut after 15 bytes"),
        _frame(Cmd.READ, 22, 0x300), ("answer", "READ after the cut frame"),
        ("send", bytes([0xA5, Cmd.READ])), ("quiet", RX_TIMEOUT + 50),  # no SEQ: no answer
        ("send", garbage), _frame(Cmd.READ, 23, 0x300), ("answer", "READ between garbage"),
        ("send", garbage),
        ("send", bytes(huge)), ("answer", "WRITE_BURST with LEN hit"),
        ("send", b"\xa5"), ("idle", RX_TIMEOUT + 10),  # a lone sync byte, then silence
        _frame(Cmd.WRITE_BURST, 24, 0x300, 4, [1, 2, 3, 4]), ("answer", "WRITE_BURST whole"),
        _frame(Cmd.READ_BURST, 25, 0x300, 4), ("answer", "READ_BURST back"),
    ])
    _expect(run, "WRITE_BURST cut after 15 bytes", Cmd.WRITE_BURST, 20, Status.TRUNCATED, 0)
    _expect(run, "READ after the cut frame", Cmd.READ, 22, Status.ACK, 1, [0])
    _expect(run, "READ between garbage", Cmd.READ, 23, Status.ACK, 1, [0])
    _expect(run, "WRITE_BURST with LEN hit", Cmd.WRITE_BURST, 21, Status.TRUNCATED, 0)
    _expect(run, "WRITE_BURST whole", Cmd.WRITE_BURST, 24, Status.ACK, 4)
    _expect(run, "READ_BURST back", Cmd.READ_BURST, 25, Status.ACK, 4, [1, 2, 3, 4])
    assert [e for e in run.memory.log if e[0] == "W"] == [("W", 0xC0 + k, k + 1)
                                                         for k in range(4)]


def test_full_default_burst():
    """The default bridge (max_burst 256, 30-bit bus): ID reports 256, a 256-word burst works."""
    dut = BusBridge()
    mem = WishboneMemory(dut.bus, dut.bus_err, latency=1)
    words = [(k * 0x9E3779B9) & 0xFFFFFFFF for k in range(256)]
    frames = [encode_request(Cmd.ID, 1, 0, 3),
              encode_request(Cmd.WRITE_BURST, 2, 0x8000_0000, 256, words),
              encode_request(Cmd.READ_BURST, 3, 0x8000_0000, 256)]
    answers = []

    async def host(ctx):
        decoder = AnswerDecoder(max_count=256)
        ctx.set(dut.tx.ready, 1)
        for frame in frames:
            for b in frame:
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, b)
                await ctx.tick().until(dut.rx.ready)
            ctx.set(dut.rx.valid, 0)
            for _ in range(3000):
                _, _, valid, payload = await ctx.tick().sample(dut.tx.valid, dut.tx.payload)
                if valid and (got := decoder.feed(bytes([payload]))):
                    answers.extend(got)
                    break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(mem.run, background=True)
    sim.run()
    assert [(a.seq, a.status, a.count) for a in answers] == [(1, 0, 3), (2, 0, 256), (3, 0, 256)]
    assert answers[0].words[1] >> 16 == 256
    assert list(answers[2].words) == words
    assert mem.log[0] == ("W", 0x2000_0000, words[0])


# ---- the whole bridge behind the UART -------------------------------------------------------

def test_uart_bridge_end_to_end_at_3mbaud():
    """UARTBridge at divisor 16 (3 Mbaud at 48 MHz), driven and read by the 8N1 line model."""
    d = 16
    dut = UARTBridge(divisor=d, max_burst=8, addr_width=12, rx_timeout=40 * d,
                     bus_timeout=BUS_TIMEOUT, board=0x1234)
    mem = WishboneMemory(dut.bus, dut.bus_err, latency=1)
    frames = [
        (encode_request(Cmd.ID, 1, 0, 3), 3),
        (encode_request(Cmd.WRITE_BURST, 2, 0x40, 2, [10, 20]), 0),
        (encode_request(Cmd.READ_BURST, 3, 0x44, 1), 1),
    ]
    answers, timing, line_bytes = [], [], []

    async def host(ctx):
        await ctx.tick().repeat(5)
        for frame, n_words in frames:
            start, first = ctx.get(cycle), len(line_bytes)
            await line_send(ctx, dut.rx, frame, d)
            expected = first + 8 + 4 * n_words
            for _ in range(400):
                if len(line_bytes) >= expected:
                    break
                await ctx.tick().repeat(d)
            raw = bytes(b for b, _ in line_bytes[first:])
            got = AnswerDecoder().feed(raw)
            assert len(got) == 1, f"answer to seq {frame[2]}: {raw.hex()}"
            answers.append(got[0])
            timing.append((ctx.get(cycle) - start, len(frame) + len(raw)))

    async def line(ctx):
        await line_receive(ctx, dut.tx, d, line_bytes, exact=False)

    cycle = Signal(32)
    m = Module()
    m.submodules.dut = dut
    m.d.sync += cycle.eq(cycle + 1)
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(line, background=True)
    sim.add_testbench(mem.run, background=True)
    sim.run()
    assert [(a.seq, a.status, a.count, list(a.words)) for a in answers] == [
        (1, 0, 3, [ID_MAGIC, PROTOCOL_VERSION | 8 << 16, 0x1234]),
        (2, 0, 2, []),
        (3, 0, 1, [20]),
    ]
    # Each round trip is its bytes' line time plus a bounded turnaround (synchroniser, mid-stop
    # sampling, decode, bus, encode): under two bit times.
    for cycles, n_bytes in timing:
        assert 10 * d * n_bytes <= cycles <= 10 * d * n_bytes + 2 * d, (cycles, n_bytes)


# A refused constructor leaves a half-built Elaboratable behind; Amaranth warns when it is freed.
@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_parameters_are_checked():
    with pytest.raises(ValueError, match="divisor must be an integer of at least 4 clock "
                       "cycles per bit, not 3"):
        UARTRx(3)
    with pytest.raises(ValueError, match=r"max_burst must be an integer in \[3, 65535\], not 2"):
        BusBridge(max_burst=2)
    with pytest.raises(ValueError, match=r"addr_width must be an integer in \[1, 30\], not 31"):
        BusBridge(addr_width=31)
    gc.collect()  # free them inside this test, under its warning filter

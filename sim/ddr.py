"""A cocotb AXI4 slave memory: the DDR model behind the engine's master port.

Why our own and not cocotbext-axi's ``AxiRam``: that model runs five coroutines that wake every
clock (about 18 k beats/s here) and has no notion of DDR latency. This one is a single coroutine
that acts once per clock while a transfer is in flight and sleeps on signal edges otherwise, with
a fixed read latency, at most one read beat per cycle (64 bits/cycle at the default width), seeded
random gaps on all five channels (AR, R, AW, W, B; each its own probability, the pattern set by
the timing's seed whenever a job sets its timing), and error injection by address range.

Timing model: the coroutine runs on the falling edge. There it samples the master's outputs, which
are stable from the previous rising edge to the next one, drives its own outputs for the next
rising edge, and commits the handshakes that edge will perform. This assumes (as the AXI4 spec
requires of VALID, Ref: A3.3.1) that the master's VALID/payload outputs do not depend
combinationally on this slave's READY/VALID in the same cycle; READY outputs of the master may.
"""

import random
from collections import deque
from dataclasses import dataclass

import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge
from cocotb.utils import get_sim_time

__all__ = ["DdrModel", "DdrTiming"]

OKAY, SLVERR, DECERR = 0, 2, 3


@dataclass
class DdrTiming:
    """Timing knobs of :class:`DdrModel` (and of the burst bridge, ``hdl.top.AxiBurstBridge``).

    latency : cycles from the AR handshake to the burst's first R beat
    write_latency : cycles from the last W beat to the B response
    arready_prob, awready_prob, wready_prob : probability that ARREADY / AWREADY / WREADY is high
        in a cycle
    rvalid_prob, bvalid_prob : probability that an available R beat / B response is presented in
        a cycle (once presented, it stays until taken, as AXI4 A3.2.1 requires of VALID)
    seed : seed of the pattern of gaps; a model restarts it whenever it is given this timing
    """

    latency: int = 30
    write_latency: int = 4
    arready_prob: float = 1.0
    rvalid_prob: float = 1.0
    awready_prob: float = 1.0
    wready_prob: float = 1.0
    bvalid_prob: float = 1.0
    seed: int = 0

    #: The channel probabilities, in AXI channel order.
    CHANNELS = ("arready_prob", "rvalid_prob", "awready_prob", "wready_prob", "bvalid_prob")

    @classmethod
    def random(cls, rng):
        """A timing drawn from ``rng`` (a ``numpy.random.Generator``): each latency at its
        minimum (1 cycle: the beat or response right after its handshake) one time in five,
        else uniform in 2-79 (reads) or 2-19 (write responses); per channel either no gaps (one
        time in three, so that every channel is sometimes the only one throttled) or a
        probability uniform in [0.25, 1)."""
        probs = {name: 1.0 if rng.random() < 1 / 3 else float(rng.uniform(0.25, 1.0))
                 for name in cls.CHANNELS}
        latency, write_latency = (1 if rng.random() < 1 / 5 else int(rng.integers(2, top))
                                  for top in (80, 20))
        return cls(latency=latency, write_latency=write_latency, seed=int(rng.integers(1 << 31)),
                   **probs)


def _bit(signal):
    """A 1-bit master output as 0/1. Icarus shows X on outputs of Amaranth's ``always @*``
    blocks until one of their inputs first changes (they are not evaluated at time 0); that X is
    a simulator artifact, read as 0."""
    try:
        return int(signal.value)
    except ValueError:
        return 0


class DdrModel:
    """Byte-addressed memory behind an AXI4 slave port (INCR bursts only).

    Read bursts are served in AR order (allowed: in-order across IDs is a legal slave choice),
    one beat per cycle at most. Writes honour WSTRB. A burst that touches an injected error range
    returns that range's response on every beat (reads: data zero) or on its B (writes: nothing is
    written).

    Parameters
    ----------
    dut : cocotb handle holding the bus signals
    clk : the clock signal
    size : memory size in bytes
    prefix : signal-name prefix (Amaranth names the port ``axi__<signal>``)
    data_width : bits per beat
    period_ns : clock period (latencies are counted in clock cycles)
    timing : DdrTiming
    """

    def __init__(self, dut, clk, size, *, period_ns, prefix="axi__", data_width=64,
                 timing=None):
        self.clk, self.period_ns = clk, period_ns
        self.mem = np.zeros(size, dtype=np.uint8)
        self.beat = data_width // 8
        self.set_timing(timing or DdrTiming())
        self.errors = []  # (start, end, resp, kind)
        self.reset()
        self.stats = {"read_beats": 0, "write_beats": 0}
        sig = {n: getattr(dut, prefix + n) for n in (
            "arvalid", "arready", "araddr", "arlen", "arid", "rvalid", "rready", "rdata", "rid",
            "rresp", "rlast", "awvalid", "awready", "awaddr", "awlen", "awid", "wvalid",
            "wready", "wdata", "wstrb", "wlast", "bvalid", "bready", "bid", "bresp")}
        self.s = type("Signals", (), sig)
        self._driven = {}
        for name in ("arready", "rvalid", "awready", "wready", "bvalid"):
            self._drive(name, 0)

    def set_timing(self, timing):
        """Use ``timing`` from now on, its pattern of gaps restarted from ``timing.seed`` (so a
        job's timing does not depend on the jobs that ran before it)."""
        self.timing = timing
        self.rng = random.Random(timing.seed)

    def reset(self):
        """Forget every transfer in flight (the master was reset); memory is kept."""
        self.reads = deque()  # [due_cycle, id, beats (list of int), resp]
        self.aws = deque()  # (addr, beats, id)
        self.wbeats = []  # (data, strb) of the burst being received
        self.wbursts = deque()  # complete W bursts whose address has not arrived yet
        self.bresps = deque()  # [due_cycle, id, resp]
        self._r_held = self._b_held = False  # a VALID presented and not yet taken

    # -- memory access for the testbench -------------------------------------------------------
    def write(self, addr, data):
        """Store ``data`` (bytes or uint8 array) at byte address ``addr``."""
        data = np.frombuffer(bytes(data), dtype=np.uint8)
        self.mem[addr:addr + len(data)] = data

    def read(self, addr, length):
        """Return ``length`` bytes from ``addr`` as a uint8 array (a copy)."""
        return self.mem[addr:addr + length].copy()

    def inject_error(self, start, end, resp=SLVERR, kind="r"):
        """Answer bursts touching bytes ``[start, end)`` with ``resp`` (kind ``"r"``/``"w"``)."""
        self.errors.append((start, end, resp, kind))

    def _resp(self, addr, nbytes, kind):
        for start, end, resp, k in self.errors:
            if k == kind and addr < end and start < addr + nbytes:
                return resp
        return OKAY

    # -- the bus process ----------------------------------------------------------------------
    async def run(self):
        """The bus process; start it with ``cocotb.start_soon(model.run())``."""
        s = self.s
        await FallingEdge(self.clk)
        while True:
            arvalid, awvalid, wvalid = _bit(s.arvalid), _bit(s.awvalid), _bit(s.wvalid)
            if not (arvalid or awvalid or wvalid or self.aws or self.wbeats or self.wbursts):
                now = self._cycle_now()
                due = [q[0][0] for q in (self.reads, self.bresps) if q]
                if not due or min(due) > now:
                    # Nothing to do this cycle: sleep until a VALID rises or a response is due.
                    self._quiesce()
                    triggers = [RisingEdge(s.arvalid), RisingEdge(s.awvalid),
                                RisingEdge(s.wvalid)]
                    if due:
                        triggers.append(ClockCycles(self.clk, min(due) - now, rising=False))
                    if not isinstance(await First(*triggers), ClockCycles):
                        await FallingEdge(self.clk)
                    continue
            self._step(arvalid, awvalid, wvalid)
            await FallingEdge(self.clk)

    def _quiesce(self):
        for name in ("arready", "awready", "wready", "rvalid", "bvalid"):
            self._drive(name, 0)

    def _drive(self, name, value):
        # Writes through the simulator interface are the model's main cost: skip unchanged ones.
        value = int(value)
        if self._driven.get(name) != value:
            self._driven[name] = value
            getattr(self.s, name).value = value

    def _chance(self, prob):
        return prob >= 1.0 or self.rng.random() < prob

    def _cycle_now(self):
        return int(get_sim_time("ns") // self.period_ns)

    def _step(self, arvalid, awvalid, wvalid):
        s, t, drive = self.s, self.timing, self._drive
        now = self._cycle_now()
        # AR
        arready = self._chance(t.arready_prob)
        drive("arready", arready)
        if arvalid and arready:
            addr, n = int(s.araddr.value), int(s.arlen.value) + 1
            # INCR bursts move on aligned beats; an unaligned start address only means the
            # master ignores the first beat's lower lanes (Ref: AMBA AXI4 spec A3.4.1).
            addr -= addr % self.beat
            resp = self._resp(addr, n * self.beat, "r")
            if resp == OKAY:
                beats = np.frombuffer(self.mem[addr:addr + n * self.beat].tobytes(),
                                      dtype=f"<u{self.beat}").tolist()
            else:
                beats = [0] * n
            self.reads.append([now + t.latency, int(s.arid.value), beats, resp])
        # R
        rvalid = False
        if self.reads and self.reads[0][0] <= now and (self._r_held
                                                        or self._chance(t.rvalid_prob)):
            due, rid, beats, resp = self.reads[0]
            rvalid = True
            drive("rdata", beats[0])
            drive("rid", rid)
            drive("rresp", resp)
            drive("rlast", int(len(beats) == 1))
            self._r_held = not int(s.rready.value)
            if not self._r_held:
                beats.pop(0)
                self.stats["read_beats"] += 1
                if not beats:
                    self.reads.popleft()
        drive("rvalid", rvalid)
        # AW
        awready = self._chance(t.awready_prob)
        drive("awready", awready)
        if awvalid and awready:
            self.aws.append((int(s.awaddr.value), int(s.awlen.value) + 1, int(s.awid.value)))
        # W
        wready = self._chance(t.wready_prob)
        drive("wready", wready)
        if wvalid and wready:
            self.wbeats.append((int(s.wdata.value), int(s.wstrb.value)))
            self.stats["write_beats"] += 1
            if int(s.wlast.value):
                self.wbursts.append(self.wbeats)
                self.wbeats = []
        # AW and W are independent channels (Ref: AMBA AXI4 spec A3.3.1): a burst's data may
        # complete before its address; commit in order once both are here.
        while self.aws and self.wbursts:
            self._commit_write(now)
        # B
        bvalid = bool(self.bresps) and self.bresps[0][0] <= now and (
            self._b_held or self._chance(t.bvalid_prob))
        drive("bvalid", bvalid)
        if bvalid:
            _, bid, resp = self.bresps[0]
            drive("bid", bid)
            drive("bresp", resp)
            self._b_held = not int(s.bready.value)
            if not self._b_held:
                self.bresps.popleft()

    def _commit_write(self, now):
        addr, n, wid = self.aws.popleft()
        addr -= addr % self.beat  # WSTRB marks the lanes of an unaligned start (A3.4.1)
        beats = self.wbursts.popleft()
        if len(beats) != n:
            raise RuntimeError(f"DdrModel: write burst at {addr:#x} has {len(beats)} beats, "
                               f"AWLEN says {n}")
        resp = self._resp(addr, n * self.beat, "w")
        if resp == OKAY:
            full = (1 << self.beat) - 1
            for i, (value, strb) in enumerate(beats):
                raw = np.frombuffer(value.to_bytes(self.beat, "little"), dtype=np.uint8)
                base = addr + i * self.beat
                if strb == full:
                    self.mem[base:base + self.beat] = raw
                else:
                    for b in range(self.beat):
                        if strb >> b & 1:
                            self.mem[base + b] = raw[b]
        self.bresps.append([now + self.timing.write_latency, wid, resp])

"""The sequencer: runs a whole descriptor program on the engine, with no host in the loop.

The host writes the program address, the layer count and the perf-record address into the
sequencer's CSRs and starts it once. Per layer the sequencer then

1. fetches the layer's :data:`~hdl.descriptor.DESCRIPTOR_WORDS` descriptor words from DDR
   (INCR bursts on the shared AXI4 master, split at 4 KB boundaries),
2. writes them into the engine's descriptor CSRs over the engine's own Wishbone port and starts
   it (the engine, :class:`hdl.engine.Engine`, is used unmodified),
3. waits for the engine's done interrupt and reads its error flags and performance counters back
   over Wishbone,
4. writes a 64-byte performance record for the layer to DDR (:data:`RECORD_WORDS`),

and goes on with the next layer, or stops at the first layer that reports an AXI error or that
its watchdog (:class:`hdl.watchdog.Watchdog`) stops: no progress (no handshake on the AXI4 master,
no Wishbone acknowledge of the engine port) for ``WATCHDOG`` cycles.
``docs/sequencer.md`` documents the CSR map, the record layout and the bus sharing.

Bus sharing: the engine and the sequencer share one AXI4 master through an *owner mux*. The
engine owns the bus from the cycle its start is written until its done interrupt; the sequencer
owns it otherwise. The engine raises done only once all its bursts have completed (outstanding
reads collected, write responses received, also after an error), and the sequencer issues nothing
while the engine owns the bus, so no transaction ever straddles a change of owner and a plain
multiplexer is enough. The owner is a register, so no master output depends combinationally on a
slave input through the mux.
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow, In, Out, connect

from hdl.axi import AXI4Signature, BurstPlanner, WishboneRegisterSlice, WishboneSignature
from hdl.descriptor import DESCRIPTOR_WORDS, EngineConfig
from hdl.engine import COUNTERS, CSR, Engine
from hdl.watchdog import Watchdog

__all__ = ["CSR_SLICES", "RECORD", "RECORD_WORDS", "SEQ_CSR", "SEQ_ERR", "Sequencer",
           "WATCHDOG_RESET"]

#: Reset value of the WATCHDOG CSR: 2**24 cycles (168 ms at 100 MHz) without progress.
WATCHDOG_RESET = 1 << 24

#: :class:`hdl.axi.WishboneRegisterSlice` stages between the sequencer and the engine's CSRs,
#: which sit far apart on the chip: with one, the engine's ACK to the stage's clock enables and
#: the stage's data to the sequencer's record were 12–12.5 ns of routing (routed at 80 MHz); with
#: two, the sequencer's request into the first stage was the worst path of three routed runs
#: (13.8–16.3 ns, 4 cells).
CSR_SLICES = 3

#: 32-bit words per performance record (one 64-byte, 8-beat burst per layer).
RECORD_WORDS = 16


class RECORD:
    """Word offsets inside a layer's performance record (``docs/sequencer.md``)."""

    COUNTERS = 0  #: the engine's :data:`hdl.engine.COUNTERS`, in order (8 words)
    LAYER = 8  #: index of the layer in the program
    STATUS = 9  #: engine STATUS [2:0] | engine ERROR [11:8]
    SEQ_CYCLES = 10  #: sequencer cycles of the layer: descriptor fetch start to counters read


class SEQ_CSR:
    """Word addresses of the sequencer's CSRs (Wishbone B4 classic slave, 32-bit words)."""

    CTRL = 0x00  #: write bit 0 = 1: run the program (ignored while busy)
    STATUS = 0x01  #: bit 0 busy, bit 1 done (sticky until the next start; also ``irq``), 2 error
    ERROR = 0x02  #: :class:`SEQ_ERR` flags of the last run (cleared at start)
    LAYER = 0x03  #: layer in progress; after a run: the count, or the layer that failed
    PROG_ADDR = 0x04  #: byte address of descriptor 0 (8-byte aligned)
    COUNT = 0x05  #: number of layers (descriptors) in the program
    PERF_ADDR = 0x06  #: byte address of the performance records (64-byte aligned)
    CONFIG = 0x07  #: P_ic [7:0], P_oc [15:8], DESCRIPTOR_WORDS [23:16], RECORD_WORDS [31:24]
    CYCLES = 0x08  #: cycles of the last run, start to done
    WATCHDOG = 0x09  #: cycles without progress that stop a layer (0: off; reset 2**24)


class SEQ_ERR:
    """Bits of the sequencer's ERROR CSR. Bits 0-3 are the engine's :class:`hdl.engine.ERR`
    flags of the failing layer; the others are the sequencer's own bus errors and refusals."""

    ENGINE = 0xF  #: mask of the engine's flags
    DESC_SLVERR = 1 << 4  #: a descriptor fetch got SLVERR
    DESC_DECERR = 1 << 5  #: a descriptor fetch got DECERR
    RECORD_SLVERR = 1 << 6  #: a performance-record write got SLVERR
    RECORD_DECERR = 1 << 7  #: a performance-record write got DECERR
    ALIGN = 1 << 8  #: PROG_ADDR not 8-byte or PERF_ADDR not 64-byte aligned: nothing was run
    WATCHDOG = 1 << 9  #: the watchdog stopped layer LAYER (set as it fires, also while busy)


def _resp_flags(resp, slverr, decerr):
    """SLVERR/DECERR flag of an AXI response (Ref: AMBA AXI4 spec A3.4.4: RESP[1] = error)."""
    return Mux(resp[1], Mux(resp[0], decerr, slverr), 0)


class _Registers:
    """The sequencer's registers, shared by the units of its ``elaborate``."""

    def __init__(self, cfg):
        words_per_beat = cfg.data_width // 32
        desc_beats = -(-DESCRIPTOR_WORDS // words_per_beat)
        record_beats = RECORD_WORDS // words_per_beat
        self.prog_addr = Signal(cfg.addr_width)
        self.perf_addr = Signal(cfg.addr_width)
        self.count = Signal(16)
        self.busy = Signal()
        self.done = Signal()
        self.error = Signal(10)
        self.watchdog = Signal(32, init=WATCHDOG_RESET)
        self.stopping = Signal()  # the engine was told to abort this layer
        self.layer = Signal(16)
        self.cycles = Signal(32)
        self.desc_addr = Signal(cfg.addr_width)  # next descriptor beat to fetch
        self.rec_addr = Signal(cfg.addr_width)  # this layer's record
        self.remaining = Signal(range(desc_beats + 1))  # descriptor beats not yet requested
        self.received = Signal(range(desc_beats + 1))
        # shift registers: descriptor beats shift in and words out to the engine; counters
        # shift in and record beats out
        self.desc = [Signal(32, name=f"desc{i}") for i in range(desc_beats * words_per_beat)]
        self.record = [Signal(32, name=f"rec{i}") for i in range(RECORD_WORDS)]
        self.status = Signal(12)  # the record's STATUS word while the flags are read
        self.idx = Signal(range(max(DESCRIPTOR_WORDS, len(COUNTERS) + 1, record_beats) + 1))
        self.layer_cycles = Signal(32)


class Sequencer(wiring.Component):
    """Engine + descriptor sequencer: one start runs a whole program.

    Parameters
    ----------
    cfg : EngineConfig, optional

    Ports
    -----
    csr : In(WishboneSignature(addr_width=8, data_width=32))
        The :class:`SEQ_CSR` map.
    axi : Out(AXI4Signature)
        The one memory port, shared by descriptor fetches, record writes and the engine.
    irq : Out(1)
        High while the done bit of STATUS is set.
    progress : Out(16)
        Layers completed in the current run (the record of layer ``progress - 1`` is in DDR);
        cleared at start. It lets a testbench check each layer's output before a later layer
        reuses its buffer.
    """

    def __init__(self, cfg=None):
        self.cfg = cfg = cfg or EngineConfig()
        super().__init__({
            "csr": In(WishboneSignature(addr_width=8, data_width=32)),
            "axi": Out(AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)),
            "irq": Out(1),
            "progress": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        beat_bytes = cfg.data_width // 8
        words_per_beat = cfg.data_width // 32
        desc_beats = -(-DESCRIPTOR_WORDS // words_per_beat)
        record_beats = RECORD_WORDS // words_per_beat
        m.submodules.engine = engine = Engine(cfg)

        own = AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width).create(
            path=("seq_axi",))
        engine_owns = Signal()
        self._owner_mux(m, own, engine.axi, engine_owns)

        r = _Registers(cfg)
        m.d.comb += [self.irq.eq(r.done), self.progress.eq(r.layer)]
        # the engine's CSRs through CSR_SLICES register stages: the sequencer and the engine's
        # descriptor registers sit far apart on the chip
        sub = engine.csr
        for k in range(CSR_SLICES):
            m.submodules[f"csr_slice{k}"] = csr_slice = WishboneRegisterSlice(
                addr_width=len(engine.csr.adr), data_width=len(engine.csr.dat_w))
            connect(m, csr_slice.sub, sub)
            sub = csr_slice.bus
        wb = sub
        m.submodules.watchdog = wd = Watchdog()
        bus = self.axi
        m.d.comb += [wd.limit.eq(r.watchdog), wd.run.eq(r.busy), wd.kick.eq(
            (bus.arvalid & bus.arready) | (bus.rvalid & bus.rready) | (bus.awvalid & bus.awready)
            | (bus.wvalid & bus.wready) | (bus.bvalid & bus.bready) | wb.ack)]
        fired = r.error[9]  # SEQ_ERR.WATCHDOG
        with m.If(r.busy):
            m.d.sync += [r.cycles.eq(r.cycles + 1), r.layer_cycles.eq(r.layer_cycles + 1)]

        # ---- own AXI master: constant fields --------------------------------------------------
        size = Const((beat_bytes).bit_length() - 1, 3)
        m.d.comb += [
            own.arsize.eq(size), own.arburst.eq(0b01), own.arid.eq(0),
            own.awsize.eq(size), own.awburst.eq(0b01), own.awid.eq(0),
            own.awlen.eq(record_beats - 1), own.awaddr.eq(r.rec_addr), own.wstrb.eq(-1),
            own.rready.eq(1), own.bready.eq(1),
        ]
        m.submodules.plan = plan = BurstPlanner(addr_width=cfg.addr_width, remaining_width=len(
            r.remaining), max_beats=desc_beats, beat_bytes=beat_bytes)
        m.d.comb += [plan.addr.eq(r.desc_addr), plan.remaining.eq(r.remaining)]
        blen = plan.beats  # valid in AR: PLAN1, PLAN2 follow every change of the two

        # ---- engine Wishbone master ------------------------------------------------------------
        wb_go = Signal()  # hold CYC/STB with the payload below until ACK
        m.d.comb += [wb.cyc.eq(wb_go), wb.stb.eq(wb_go)]

        decoded_start, start = Signal(), Signal()
        self._csr_slave(m, r, decoded_start)
        m.d.sync += start.eq(decoded_start)  # registered: it steers the whole layer loop

        # ---- the layer loop -------------------------------------------------------------------
        r_fire = own.rvalid & own.rready
        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [r.busy.eq(1), r.done.eq(0), r.error.eq(0), r.layer.eq(0),
                                 r.cycles.eq(0)]
                    with m.If((r.prog_addr[:3] != 0) | (r.perf_addr[:6] != 0)):
                        m.d.sync += r.error.eq(SEQ_ERR.ALIGN)
                        m.next = "FINISH"
                    with m.Elif(r.count == 0):
                        m.next = "FINISH"
                    with m.Else():
                        m.d.sync += [r.desc_addr.eq(r.prog_addr), r.rec_addr.eq(r.perf_addr)]
                        m.next = "FETCH"
            with m.State("FETCH"):  # a new layer: first descriptor beat
                m.d.sync += [r.remaining.eq(desc_beats), r.received.eq(0), r.layer_cycles.eq(0),
                             r.stopping.eq(0)]
                m.next = "PLAN1"
            with m.State("PLAN1"):  # the burst planner's two stages see desc_addr, remaining
                m.next = "PLAN2"
            with m.State("PLAN2"):
                m.next = "AR"
            with m.State("AR"):  # ARVALID stays until ARREADY, watchdog or not (AXI4 A3.2.1)
                m.d.comb += [own.arvalid.eq(1), own.araddr.eq(r.desc_addr),
                             own.arlen.eq(blen - 1)]
                with m.If(own.arready):
                    m.d.sync += [r.desc_addr.eq(r.desc_addr + blen * beat_bytes),
                                 r.remaining.eq(r.remaining - blen)]
                    m.next = "R"
            with m.State("R"):
                with m.If(r_fire):
                    # the words shift in at the top, so each takes its neighbour or the beat:
                    # no write decode from `received`
                    n = len(r.desc)
                    m.d.sync += [r.desc[i].eq(r.desc[i + words_per_beat])
                                 for i in range(n - words_per_beat)]
                    m.d.sync += [r.desc[n - words_per_beat + i].eq(own.rdata[32 * i:32 * i + 32])
                                 for i in range(words_per_beat)]
                    m.d.sync += [r.received.eq(r.received + 1),
                                 r.error.eq(r.error | _resp_flags(own.rresp, SEQ_ERR.DESC_SLVERR,
                                                              SEQ_ERR.DESC_DECERR))]
                    with m.If(own.rlast):
                        # Finish the burst even after an error (Ref: AXI4 A3.4.4: every beat of
                        # a burst is transferred whatever its response), then decide.
                        with m.If(r.error.any() | own.rresp[1] | fired):
                            m.next = "FINISH"
                        with m.Elif(r.remaining == 0):
                            m.d.sync += r.idx.eq(0)
                            m.next = "PROGRAM"
                        with m.Else():
                            m.next = "PLAN1"
            with m.State("PROGRAM"):  # descriptor words, then CTRL.start, to the engine
                last = r.idx == DESCRIPTOR_WORDS
                m.d.comb += [
                    wb_go.eq(1), wb.we.eq(1),
                    wb.adr.eq(Mux(last, CSR.CTRL, CSR.DESC + r.idx)),
                    wb.dat_w.eq(Mux(last, 1, r.desc[0])),
                ]
                with m.If(wb.ack):
                    # the words move up one place per write, so the next is always desc[0]
                    # (a select by idx over 12 words fed the CSR slice's data register)
                    m.d.sync += [r.idx.eq(r.idx + 1),
                                 *(r.desc[i].eq(r.desc[i + 1]) for i in range(len(r.desc) - 1))]
                    with m.If(r.idx == DESCRIPTOR_WORDS - 1):
                        # Hand the bus over before the start is written: the sequencer has no
                        # transaction in flight, and the engine may issue right after its start.
                        m.d.sync += engine_owns.eq(1)
                    with m.If(last):
                        m.next = "RUN"
            with m.State("RUN"):
                with m.If(engine.irq):  # done: all the engine's transactions have completed
                    m.d.sync += [engine_owns.eq(0), r.idx.eq(0)]
                    m.next = "READBACK"
                with m.Elif(fired & ~r.stopping):
                    m.next = "ABORT"
            with m.State("ABORT"):  # CTRL.abort: the engine's bus-error stop, bursts completed
                m.d.comb += [wb_go.eq(1), wb.we.eq(1), wb.adr.eq(CSR.CTRL), wb.dat_w.eq(0b10)]
                with m.If(wb.ack):
                    m.d.sync += r.stopping.eq(1)
                    m.next = "RUN"  # its done follows once its bursts have completed
            self._record_states(m, r, own, wb, wb_go)
            with m.State("FINISH"):
                m.d.sync += [r.busy.eq(0), r.done.eq(1)]
                m.next = "IDLE"
        with m.If(wd.expired):  # after the FSM: wins over its updates of the ERROR register
            m.d.sync += fired.eq(1)
        return m

    def _owner_mux(self, m, own, eng_axi, engine_owns):
        """The bus is the engine's from its start to its done, the sequencer's otherwise."""
        for name, member in self.axi.signature.members.items():
            port, mine, eng = getattr(self.axi, name), getattr(own, name), getattr(eng_axi, name)
            if member.flow == Flow.Out:  # master to slave: from the owner
                m.d.comb += port.eq(Mux(engine_owns, eng, mine))
            elif name.endswith(("valid", "ready")):  # slave handshakes: to the owner only
                m.d.comb += [eng.eq(port & engine_owns), mine.eq(port & ~engine_owns)]
            else:  # slave payloads: meaningless without their VALID, so shared
                m.d.comb += [eng.eq(port), mine.eq(port)]

    def _csr_slave(self, m, r, start):
        """The :class:`SEQ_CSR` map; ``start`` pulses on a CTRL write while idle."""
        bus, cfg = self.csr, self.cfg
        m.d.sync += bus.ack.eq(0)
        with m.If(bus.cyc & bus.stb & ~bus.ack):
            # Registered ACK, one wait state (Ref: Wishbone B4 3.2.3, classic read/write cycles).
            m.d.sync += bus.ack.eq(1)
            with m.If(bus.we):
                with m.Switch(bus.adr):
                    with m.Case(SEQ_CSR.CTRL):
                        m.d.comb += start.eq(bus.dat_w[0] & ~r.busy)
                    with m.Case(SEQ_CSR.PROG_ADDR):
                        m.d.sync += r.prog_addr.eq(bus.dat_w)
                    with m.Case(SEQ_CSR.COUNT):
                        m.d.sync += r.count.eq(bus.dat_w)
                    with m.Case(SEQ_CSR.PERF_ADDR):
                        m.d.sync += r.perf_addr.eq(bus.dat_w)
                    with m.Case(SEQ_CSR.WATCHDOG):  # takes effect at the watchdog's next reload
                        m.d.sync += r.watchdog.eq(bus.dat_w)
            with m.Else():
                with m.Switch(bus.adr):
                    with m.Case(SEQ_CSR.STATUS):
                        m.d.sync += bus.dat_r.eq(Cat(r.busy, r.done, r.error.any()))
                    with m.Case(SEQ_CSR.ERROR):
                        m.d.sync += bus.dat_r.eq(r.error)
                    with m.Case(SEQ_CSR.LAYER):
                        m.d.sync += bus.dat_r.eq(r.layer)
                    with m.Case(SEQ_CSR.PROG_ADDR):
                        m.d.sync += bus.dat_r.eq(r.prog_addr)
                    with m.Case(SEQ_CSR.COUNT):
                        m.d.sync += bus.dat_r.eq(r.count)
                    with m.Case(SEQ_CSR.PERF_ADDR):
                        m.d.sync += bus.dat_r.eq(r.perf_addr)
                    with m.Case(SEQ_CSR.CONFIG):
                        m.d.sync += bus.dat_r.eq(Cat(Const(cfg.p_ic, 8), Const(cfg.p_oc, 8),
                                                     Const(DESCRIPTOR_WORDS, 8),
                                                     Const(RECORD_WORDS, 8)))
                    with m.Case(SEQ_CSR.CYCLES):
                        m.d.sync += bus.dat_r.eq(r.cycles)
                    with m.Case(SEQ_CSR.WATCHDOG):
                        m.d.sync += bus.dat_r.eq(r.watchdog)
                    with m.Default():
                        m.d.sync += bus.dat_r.eq(0)

    def _record_states(self, m, r, own, wb, wb_go):
        """FSM states after a layer: read the engine's flags and counters back, write the
        record, take its response, then the next layer (or FINISH)."""
        words_per_beat = self.cfg.data_width // 32
        record_beats = RECORD_WORDS // words_per_beat
        with m.State("READBACK"):  # ERROR and STATUS into the record, then the counters
            m.d.comb += [
                wb_go.eq(1), wb.we.eq(0),
                wb.adr.eq(Mux(r.idx == 0, CSR.ERROR,
                              Mux(r.idx == 1, CSR.STATUS, CSR.COUNTERS + r.idx - 2))),
            ]
            # The counters shift into the record's first words in the order they are read (no
            # write decode from idx); STATUS gathers in a register of its own.
            counters = [r.record[RECORD.COUNTERS + k] for k in range(len(COUNTERS))]
            with m.If(wb.ack):
                m.d.sync += r.idx.eq(r.idx + 1)
                with m.If(r.idx == 0):
                    m.d.sync += [r.error.eq(r.error | wb.dat_r[:4]),
                                 r.status.eq(wb.dat_r[:4] << 8)]
                with m.Elif(r.idx == 1):
                    m.d.sync += r.status.eq(r.status | wb.dat_r[:3])
                with m.Else():
                    m.d.sync += [*(counters[k].eq(counters[k + 1])
                                   for k in range(len(counters) - 1)),
                                 counters[-1].eq(wb.dat_r)]
                with m.If(r.idx == len(COUNTERS) + 1):
                    m.d.sync += [r.record[RECORD.LAYER].eq(r.layer),
                                 r.record[RECORD.STATUS].eq(r.status),
                                 r.record[RECORD.SEQ_CYCLES].eq(r.layer_cycles), r.idx.eq(0)]
                    m.next = "AW"
        with m.State("AW"):  # the 64-byte record at PERF_ADDR + 64 * layer: one burst
            m.d.comb += own.awvalid.eq(1)
            with m.If(own.awready):
                m.next = "W"
        with m.State("W"):
            # The record shifts out a beat at a time (no select by idx), zeros entering at the
            # top: after the burst it is all zero, as its unused words must be for the next.
            n = len(r.record)
            m.d.comb += [own.wvalid.eq(1), own.wdata.eq(Cat(*r.record[:words_per_beat])),
                         own.wlast.eq(r.idx == record_beats - 1)]
            with m.If(own.wready):
                m.d.sync += r.idx.eq(r.idx + 1)
                m.d.sync += [r.record[i].eq(r.record[i + words_per_beat] if i + words_per_beat < n
                                            else 0) for i in range(n)]
                with m.If(r.idx == record_beats - 1):
                    m.next = "B"
        with m.State("B"):
            with m.If(own.bvalid):
                flags = r.error | _resp_flags(own.bresp, SEQ_ERR.RECORD_SLVERR,
                                            SEQ_ERR.RECORD_DECERR)
                m.d.sync += [r.error.eq(flags), r.rec_addr.eq(r.rec_addr + RECORD_WORDS * 4)]
                with m.If(flags.any()):  # SEQ_ERR.WATCHDOG is among them
                    m.next = "FINISH"  # LAYER keeps naming the failed layer
                with m.Else():
                    m.d.sync += r.layer.eq(r.layer + 1)
                    with m.If(r.layer == r.count - 1):
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "FETCH"

"""The convolution engine: one layer from a descriptor, DDR in, DDR out.

Dataflow (``docs/engine.md`` has the arithmetic behind these choices)::

    AXI R ──► input loader ──► input buffer (2 halves: a row tile's input groups, or one group)
          └─► weight loader ─► weight store ─► shadow weights ─► MAC array (p_oc × p_ic)
                            └► requant params (2 slots)           │ accumulate over (ic, ky, kx)
    AXI W ◄── writer ◄── output FIFO ◄── drain: requant + maxpool ◄── accumulator banks (2)

Loop nest (every unit walks the same nest with its own counters, so they run decoupled and are
synchronized only by full/free flags)::

    for tile in row tiles:                      # tile_rows output rows, all columns
      for og in output-channel groups (p_oc):   # accumulators double-buffered per og
        for ig in input-channel groups (p_ic):  # input chunk (tile, ig): loaded once if resident
          for ky, kx in kernel:                 # one pass: fixed p_oc × p_ic weights
            for pixel in tile:                  # one pixel per cycle
              acc[pixel][0:p_oc] += W[og, ig, ky, kx] @ x[ig][pixel + (ky, kx)]
"""

from amaranth import Array, Cat, ClockDomain, ClockSignal, Const, DomainRenamer, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out, connect

from hdl.axi import AXI4Signature, ReadArbiter, WishboneSignature
from hdl.descriptor import DESC_LATENCY, DESCRIPTOR_WORDS, Descriptor, EngineConfig
from hdl.engine.accum import AccumulatorBanks
from hdl.engine.compute import Compute
from hdl.engine.drain import Drain
from hdl.engine.loader import InputLoader
from hdl.engine.weights import WeightLoader
from hdl.engine.writer import Writer

__all__ = ["COUNTERS", "CSR", "ERR", "Engine", "EngineCore"]

#: Performance counters, in CSR order (``docs/engine.md`` defines each).
COUNTERS = ("cycles", "mac_active", "stall_input", "stall_weights", "stall_requant",
            "stall_output", "bytes_read", "bytes_written")


class ERR:
    """Bits of the error-flags CSR."""

    READ_SLVERR = 1 << 0
    READ_DECERR = 1 << 1
    WRITE_SLVERR = 1 << 2
    WRITE_DECERR = 1 << 3


class CSR:
    """Word addresses of the CSRs on the Wishbone port (``docs/engine.md``, CSR map)."""

    CTRL = 0x00  #: write bit 0 = 1: start the layer in the descriptor registers; bit 1: abort it
    STATUS = 0x01  #: bit 0 busy, bit 1 done (sticky until next start), bit 2 error
    ERROR = 0x02  #: ERR flags of the last layer (cleared at start)
    CONFIG = 0x03  #: p_ic [7:0], p_oc [15:8]
    DESC = 0x08  #: DESCRIPTOR_WORDS descriptor words
    COUNTERS = 0x20  #: the COUNTERS, one word each


class EngineCore(wiring.Component):
    """The engine without its CSR front end: descriptor and start in, AXI4 master out.

    Ports
    -----
    desc : In(Descriptor)
        Sampled on ``start``; may change while the layer runs.
    start : In(1)
        One-cycle pulse; ignored while ``busy``.
    stop : In(1)
        One-cycle pulse: abort the running layer as on a bus error (its bursts complete, then
        ``done``); ignored while idle.
    busy, done : Out(1)
        ``done`` pulses for one cycle when the layer finished (or stopped on an error).
    error : Out(4)
        :class:`ERR` flags of the running/last layer, cleared by ``start``.
    counters : Out(ArrayLayout(32, len(COUNTERS)))
        Performance counters of the running/last layer, cleared by ``start``.
    axi : Out(AXI4Signature)
    """

    def __init__(self, cfg=None):
        self.cfg = cfg = cfg or EngineConfig()
        super().__init__({
            "desc": In(Descriptor), "start": In(1), "stop": In(1), "busy": Out(1),
            "done": Out(1),
            "error": Out(4), "counters": Out(data.ArrayLayout(32, len(COUNTERS))),
            "axi": Out(AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        p_oc = cfg.p_oc
        axi = self.axi
        # `top` holds layer control, errors and counters, reset by the domain's reset. `m` holds
        # the units, in a domain of their own on the same clock whose only reset is `starting`:
        # the last cycle before the units run a launched layer (so an aborted layer leaves no
        # state), or the cycle after the domain's reset. A register, not the CSR decode nor an
        # OR with the domain's reset, drives those ~1.8k reset inputs (the units' own `clear`
        # inputs are the same signal, which yosys folds into it). The wide data registers
        # (weights, requant parameters, sums) are `reset_less`: their validity travels in
        # control state.
        top = Module()
        m = Module()

        # ---- layer control ------------------------------------------------------------------
        d = Signal(Descriptor)
        abort = Signal()
        run = Signal()
        launch = Signal()  # the accepted start pulse
        # The cycles after a launch until the units' copies of the descriptor hold the layer
        # (`woken[k]`: the launch was k + 1 cycles ago). The datapath is cleared in the last of
        # them (`starting`, initially 1: the domain's reset clears it a cycle later too): the
        # units leave reset in the first cycle their copies hold the layer. (Cleared earlier, a
        # register with a reset that the units reload from their copy every cycle would carry
        # the previous layer's value into the run: the same job took 427 or 426 cycles.)
        woken = Signal(DESC_LATENCY, init=1 << (DESC_LATENCY - 1))
        starting, waking = woken[-1], Signal()
        top.d.comb += [launch.eq(self.start & ~self.busy), waking.eq(woken.any()),
                       run.eq(self.busy & ~abort & ~waking)]
        top.d.sync += woken.eq(Cat(launch, woken[:-1]))
        with top.If(launch):
            top.d.sync += [d.eq(self.desc), self.busy.eq(1), abort.eq(0), self.error.eq(0)]

        # ---- AXI read side: arbiter, outstanding count, routing -----------------------------
        m.submodules.arbiter = arb = ReadArbiter(2, addr_width=cfg.addr_width,
                                                 data_width=cfg.data_width)
        m.d.comb += [
            axi.arid.eq(arb.arid), axi.araddr.eq(arb.araddr), axi.arlen.eq(arb.arlen),
            axi.arsize.eq(arb.arsize), axi.arburst.eq(arb.arburst), axi.arvalid.eq(arb.arvalid),
            arb.arready.eq(axi.arready),
            # Every read is issued only into reserved space, so read data is always accepted.
            axi.rready.eq(1),
        ]
        rd_outstanding = Signal(16)
        ar_fire = axi.arvalid & axi.arready
        r_fire = axi.rvalid & axi.rready
        r_end = r_fire & axi.rlast
        m.d.sync += rd_outstanding.eq(rd_outstanding + ar_fire - r_end)
        read_err = Mux(r_fire & axi.rresp[1], Mux(axi.rresp[0], ERR.READ_DECERR,
                                                  ERR.READ_SLVERR), 0)

        # ---- loaders: input rows into two buffer slots, requant tables and weights ------------
        m.submodules.in_loader = li = InputLoader(cfg)
        m.submodules.w_loader = lw = WeightLoader(cfg)
        connect(m, li.req, arb.req0)
        connect(m, lw.req, arb.req1)
        # Read data is registered before it is routed (RREADY is tied high, so a register stage
        # needs no skid buffer): the bus's RVALID through the owner mux, the routing by RID and
        # the requant-table write decode were the worst path of the routed 64-MAC design.
        r_beat = Signal(data.StructLayout({"valid": 1, "id": 1, "data": cfg.data_width,
                                           "last": 1}))
        m.d.sync += r_beat.eq(Cat(r_fire, axi.rid, axi.rdata, axi.rlast))
        for loader, rid in ((li, 0), (lw, 1)):
            m.d.comb += [loader.desc.eq(d), loader.run.eq(run),
                         loader.r.valid.eq(r_beat.valid & (r_beat.id == rid)),
                         loader.r.p.data.eq(r_beat.data), loader.r.p.last.eq(r_beat.last)]
        param_beats = 2 * p_oc
        params = Signal(data.ArrayLayout(cfg.data_width, 2 * param_beats), reset_less=True)
        # The tables are 2·param_beats words of flip-flops read across the drain and the banks:
        # a table beat takes two registers on its way there (R beat → table was 19.7 ns of
        # routing alone in the routed 128-MAC build), the second beside each word's write
        # enable, decoded from the first (the decode into 64 × 64 clock enables was 12.5 ns
        # once the block RAMs' output registers were absorbed, 11.5 ns from the loader's tag
        # FIFO). Its group's first pass needs the bias no earlier than its weights, which
        # follow the table in the same burst order and then pass the weight store.
        p_beat = Signal.like(lw.params.p, reset_less=True)
        p_valid = Signal()
        m.d.sync += [p_beat.eq(lw.params.p), p_valid.eq(lw.params.valid)]
        # (Copies of p_data, each for a quarter of the words, made routing worse: a word's
        # loads are the drain's lanes and the banks, all over the chip, whatever its index.)
        p_data = Signal(cfg.data_width, reset_less=True)
        p_we = Signal(2 * param_beats)  # one-hot: the word the beat in p_data goes to
        word = Cat(p_beat.index, p_beat.slot)
        m.d.sync += [p_data.eq(p_beat.data),
                     p_we.eq(Cat(p_valid & (word == k) for k in range(len(p_we))))]
        for k in range(len(p_we)):
            with top.If(p_we[k]):  # data registers: not reset
                top.d.sync += params[k].eq(p_data)

        # ---- compute → accumulator banks → drain ------------------------------------------
        m.submodules.compute = comp = Compute(cfg)
        m.submodules.banks = banks = AccumulatorBanks(p_oc, comp.sum_width, cfg.acc_depth)
        m.submodules.drain = drain = Drain(cfg)
        connect(top, comp.weights, lw.weights)
        connect(top, comp.acc, banks.i)
        connect(top, comp.read, banks.read)
        top.d.comb += [
            comp.desc.eq(d), comp.run.eq(run), comp.clear.eq(starting), banks.clear.eq(starting),
            comp.ready.eq(li.ready), li.release.eq(comp.release),
            li.rd_addr.eq(comp.buf_addr), comp.buf_data.eq(li.rd_data),
            # a group's first pass needs its bank and, for the bias, its requant table
            comp.bank_free.eq(banks.free & lw.params_ready), banks.claim.eq(comp.bank_claim),
            drain.desc.eq(d), drain.run.eq(run), drain.params.eq(params),
            drain.full.eq(banks.full), banks.drained.eq(drain.free), lw.release.eq(drain.free),
            banks.drain_addr.eq(drain.bank_addr), drain.bank_data.eq(banks.drain_data),
        ]
        # The banks take the biases from a register of their own, a cycle behind the table: the
        # table's words then sit by the drain, their only other reader (with the banks pulling
        # them too, the table beat into them was 15-17 ns routed). A group's first pass needs
        # its bias no earlier than its weights, which come after the table (above).
        bias = Signal(data.ArrayLayout(data.ArrayLayout(32, p_oc), 2), reset_less=True)
        for b in range(2):
            for o in range(p_oc):  # bias of channel o of bank b's group: params word 2·o of b
                top.d.sync += bias[b][o].eq(params[b * param_beats + 2 * o][:32])
                top.d.comb += banks.bias[b][o].eq(bias[b][o])

        # ---- writer ------------------------------------------------------------------------
        m.submodules.writer = writer = Writer(cfg)
        for name in ("awid", "awaddr", "awlen", "awsize", "awburst", "awvalid", "wdata", "wstrb",
                     "wlast", "wvalid", "bready"):
            m.d.comb += getattr(axi, name).eq(getattr(writer, name))
        for name in ("awready", "wready", "bid", "bresp", "bvalid"):
            m.d.comb += getattr(writer, name).eq(getattr(axi, name))
        m.d.comb += [
            writer.desc.eq(d), writer.run.eq(run), writer.abort.eq(abort),
            writer.fifo_data.eq(drain.o.payload), writer.fifo_level.eq(drain.o_level),
            drain.o.ready.eq(writer.fifo_pop),
        ]
        wr_outstanding = Signal(16)
        aw_fire = axi.awvalid & axi.awready
        b_fire = axi.bvalid & axi.bready
        m.d.sync += wr_outstanding.eq(wr_outstanding + aw_fire - b_fire)
        write_err = Mux(b_fire & axi.bresp[1], Mux(axi.bresp[0], ERR.WRITE_DECERR,
                                                   ERR.WRITE_SLVERR), 0)
        with top.If(self.busy & ((read_err | write_err) != 0)):
            top.d.sync += [self.error.eq(self.error | read_err | write_err), abort.eq(1)]
        with top.If(self.busy & self.stop):  # the sequencer's watchdog: the same abort
            top.d.sync += abort.eq(1)

        # ---- completion ------------------------------------------------------------------
        quiet = (rd_outstanding == 0) & (wr_outstanding == 0) & ~axi.arvalid
        finished = self.busy & ~launch & ~waking & (
            (writer.done & (wr_outstanding == 0)) | (abort & quiet & writer.idle))
        with top.If(finished):
            top.d.sync += self.busy.eq(0)
            top.d.comb += self.done.eq(1)

        self._counters(top, launch, waking, comp, drain, r_fire)
        top.domains.datapath = datapath = ClockDomain("datapath", local=True)
        top.d.comb += [datapath.clk.eq(ClockSignal()), datapath.rst.eq(starting)]
        top.submodules.datapath = DomainRenamer("datapath")(m)
        return top

    def _counters(self, top, launch, waking, comp, drain, r_fire):
        """Performance counters: each busy cycle in at most one of the six after ``cycles``
        (``docs/engine.md`` defines the attribution)."""
        cnt, axi, beat_bytes = self.counters, self.axi, self.cfg.data_width // 8
        with top.If(launch):
            top.d.sync += cnt.eq(0)
        with top.Elif(self.busy):
            top.d.sync += cnt[0].eq(cnt[0] + 1)
            with top.If(waking):
                pass  # the units are cleared and wait for the layer: their flags are not its own
            with top.Elif(comp.issuing):
                top.d.sync += cnt[1].eq(cnt[1] + 1)
            with top.Elif(~comp.running & comp.more):
                with top.If(~comp.input_ready):
                    top.d.sync += cnt[2].eq(cnt[2] + 1)
                with top.Elif(~comp.weights_ready):
                    top.d.sync += cnt[3].eq(cnt[3] + 1)
                with top.Elif(drain.blocked):
                    top.d.sync += cnt[5].eq(cnt[5] + 1)
                with top.Else():
                    top.d.sync += cnt[4].eq(cnt[4] + 1)
            with top.Elif(~comp.running):
                # after the last pass: draining (requant) or blocked by the writer (output)
                with top.If(drain.draining & ~drain.blocked):
                    top.d.sync += cnt[4].eq(cnt[4] + 1)
                with top.Else():
                    top.d.sync += cnt[5].eq(cnt[5] + 1)
            with top.If(r_fire):
                top.d.sync += cnt[6].eq(cnt[6] + beat_bytes)
            with top.If(axi.wvalid & axi.wready):
                top.d.sync += cnt[7].eq(cnt[7] + beat_bytes)


class Engine(wiring.Component):
    """The engine with its CSR front end (Wishbone slave, ``CSR`` word map) and AXI4 master.

    Ports
    -----
    csr : In(WishboneSignature(addr_width=8, data_width=32))
    axi : Out(AXI4Signature)
    irq : Out(1)
        High while the done bit of STATUS is set.
    """

    def __init__(self, cfg=None):
        self.cfg = cfg = cfg or EngineConfig()
        super().__init__({
            "csr": In(WishboneSignature(addr_width=8, data_width=32)),
            "axi": Out(AXI4Signature(addr_width=cfg.addr_width, data_width=cfg.data_width)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = EngineCore(self.cfg)
        connect(m, wiring.flipped(self.axi), core.axi)
        desc_words = Array(Signal(32, name=f"desc{i}") for i in range(DESCRIPTOR_WORDS))
        done = Signal()
        m.d.comb += [core.desc.eq(Cat(*desc_words)), self.irq.eq(done)]
        with m.If(core.done):
            m.d.sync += done.eq(1)
        with m.If(core.start):
            m.d.sync += done.eq(0)
        bus = self.csr
        # The request is registered before it is decoded (Ref: Wishbone B4 3.2.3: wait states):
        # the master's address logic and this decode and read mux were one path (the worst of
        # the routed 64-MAC design); a read then takes a second cycle (`_read`). CTRL.start and
        # CTRL.stop are registered too: the launch fans out to the whole descriptor and the reset.
        pending, reading = Signal(), Signal()
        adr = Signal.like(bus.adr)
        we = Signal()
        dat_w = Signal.like(bus.dat_w)
        m.d.sync += [bus.ack.eq(0), core.start.eq(0), core.stop.eq(0), pending.eq(0),
                     reading.eq(0)]
        with m.If(bus.cyc & bus.stb & ~bus.ack & ~pending & ~reading):
            m.d.sync += [pending.eq(1), adr.eq(bus.adr), we.eq(bus.we), dat_w.eq(bus.dat_w)]
        with m.If(pending):
            with m.If(we):
                m.d.sync += bus.ack.eq(1)
                with m.If(adr == CSR.CTRL):
                    m.d.sync += [core.start.eq(dat_w[0]), core.stop.eq(dat_w[1])]
                for i in range(DESCRIPTOR_WORDS):
                    with m.If(adr == CSR.DESC + i):
                        m.d.sync += desc_words[i].eq(dat_w)
            with m.Else():
                m.d.sync += reading.eq(1)  # a read is acknowledged with its data, a cycle later
        self._read(m, pending & ~we, reading, adr, desc_words, core, done)
        return m

    def _read(self, m, select, reading, adr, desc_words, core, done):
        """CSR read in two registered steps (the read mux spans registers all over the chip):
        on ``select`` within each group (descriptor words, counters, the rest), on ``reading``
        between groups; ACK comes with the data."""
        bus = self.csr
        group = Signal(2)  # 0: none (reads 0), 1: descriptor, 2: counter, 3: status etc.
        desc_word, counter, misc = Signal(32), Signal(32), Signal(32)
        with m.If(select):
            m.d.sync += [desc_word.eq(desc_words[(adr - CSR.DESC)[:4]]),
                         counter.eq(core.counters[adr[:3]]), group.eq(0)]
            with m.Switch(adr):
                with m.Case(CSR.STATUS):
                    m.d.sync += [misc.eq(Cat(core.busy, done, core.error != 0)), group.eq(3)]
                with m.Case(CSR.ERROR):
                    m.d.sync += [misc.eq(core.error), group.eq(3)]
                with m.Case(CSR.CONFIG):
                    m.d.sync += [misc.eq(Cat(Const(self.cfg.p_ic, 8), Const(self.cfg.p_oc, 8))),
                                 group.eq(3)]
                for i in range(DESCRIPTOR_WORDS):
                    with m.Case(CSR.DESC + i):
                        m.d.sync += group.eq(1)
                for i in range(len(COUNTERS)):
                    with m.Case(CSR.COUNTERS + i):
                        m.d.sync += group.eq(2)
        with m.If(reading):
            m.d.sync += [bus.ack.eq(1), bus.dat_r.eq(Array([0, desc_word, counter, misc])[group])]

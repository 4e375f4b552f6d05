"""The accumulator banks: two banks of ``acc_depth`` pixels × ``p_oc`` int32 partial sums."""

from amaranth import Array, Cat, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.bram import BRAM_READ_LATENCY, BlockRAM
from hdl.fanout import Replicated

__all__ = ["ACC_READ_LEAD", "ACC_SLICES", "AccBeat", "AccumulatorBanks", "BankState", "ReadAhead"]

#: Cycles between a pixel's ``read`` and its ``i`` beat: the bank is read
#: (:class:`hdl.bram.BlockRAM`), then the addend registered.
ACC_READ_LEAD = BRAM_READ_LATENCY + 1

#: Memories per accumulator bank, each with its own copy of the write address.
ACC_SLICES = 4


class BankState(enum.Enum, shape=2):
    FREE = 0  #: the compute unit may claim it
    COMPUTE = 1  #: an output-channel group is accumulating into it
    FULL = 2  #: complete; the drain reads it and frees it


def ReadAhead(acc_depth):
    """Layout of a pixel's bank read, :data:`ACC_READ_LEAD` cycles before its beat: its bank
    and whether its pass is the group's first (then the bias replaces the bank word)."""
    return data.StructLayout({"pix": range(acc_depth), "bank": 1, "first": 1})


def AccBeat(p_oc, sum_width, acc_depth):
    """Layout of one pixel's sums for the banks: ``first`` pass (add the bias) and ``last``
    pixel of the group (the bank is then FULL)."""
    return data.StructLayout({
        "sums": data.ArrayLayout(signed(sum_width), p_oc), "pix": range(acc_depth), "bank": 1,
        "first": 1, "last": 1,
    })


class AccumulatorBanks(wiring.Component):
    """Two accumulator banks, double-buffered between the compute unit and the drain.

    Per ``i`` beat: ``acc[bank][pix] = (bias[bank] if first else acc[bank][pix]) + sums``. The
    bank word is read :data:`ACC_READ_LEAD` cycles ahead (``read``) and registered, added in the
    beat's cycle and written from a register the cycle after, so a pixel's read-modify-write
    spans ``ACC_READ_LEAD + 1`` cycles: the same pixel must not come back within
    ``ACC_READ_LEAD + 2`` (the engine's ``min_pass``). Each bank cycles FREE → COMPUTE
    (``claim``) → FULL (the ``last`` beat's write) → FREE (``drained``).

    Full/free flags rather than streams towards the compute unit and the drain: a bank is
    filled in pixel order over many passes and read in pooling order, so the contract between
    them is the state of the whole bank.

    The data registers are never reset; ``clear`` (a layer start) returns both banks to FREE.

    A bank word read in the cycle it is written is unspecified (:class:`hdl.bram.BlockRAM`),
    and never used: a pixel is written ``ACC_READ_LEAD + 1`` cycles after its read and read
    again no sooner than ``min_pass`` cycles after that read, and the drain reads only a FULL
    bank, which nothing writes.

    Parameters
    ----------
    p_oc, sum_width, acc_depth : int

    Attributes
    ----------
    i : In(stream.Signature(AccBeat, always_ready=True))
    read : In(stream.Signature(ReadAhead, always_ready=True))
        The pixel of the ``i`` beat :data:`ACC_READ_LEAD` cycles later.
    bias : In(ArrayLayout(ArrayLayout(signed(32), p_oc), 2))
        The biases of the output-channel group in each bank.
    claim, drained : In(2)
        Bit ``b``: bank ``b`` becomes COMPUTE, resp. FREE.
    clear : In(1)
    free, full : Out(2)
        Bit ``b``: bank ``b`` is FREE, resp. FULL.
    drain_addr : In(range(acc_depth))
        Read address into the FULL banks.
    drain_data : Out(ArrayLayout(ArrayLayout(signed(32), p_oc), 2))
        Both banks' words at ``drain_addr`` of :data:`~hdl.bram.BRAM_READ_LATENCY` cycles
        before.
    """

    def __init__(self, p_oc, sum_width, acc_depth):
        self.p_oc, self.acc_depth = p_oc, acc_depth
        words = data.ArrayLayout(data.ArrayLayout(signed(32), p_oc), 2)
        super().__init__({
            "i": In(stream.Signature(AccBeat(p_oc, sum_width, acc_depth), always_ready=True)),
            "read": In(stream.Signature(ReadAhead(acc_depth), always_ready=True)),
            "bias": In(words), "claim": In(2), "drained": In(2), "clear": In(1),
            "free": Out(2), "full": Out(2),
            "drain_addr": In(range(acc_depth)), "drain_data": Out(words),
        })

    def elaborate(self, platform):
        m = Module()
        ctrl = Module()  # bank states: cleared at a layer start
        m.submodules.ctrl = ResetInserter(self.clear)(ctrl)
        acc_layout = data.ArrayLayout(signed(32), self.p_oc)
        state = Array(Signal(BankState, name=f"state{b}") for b in range(2))
        # the `i` beat's addend (bank word, or bias on the first pass), the new sum, its
        # address: data, no reset
        rdata = Signal(acc_layout, reset_less=True)
        new = Signal(acc_layout, reset_less=True)
        w_bank, w_en = Signal(reset_less=True), Signal()
        # Each bank is ACC_SLICES memories of p_oc / ACC_SLICES channels (8 DP16KD each at
        # the default), and each slice has its own copy of the write address: one register
        # driving all 58 block RAMs of both banks was the routed worst path (16.6 ns).
        n_slices = min(ACC_SLICES, self.p_oc)
        per = self.p_oc // n_slices
        m.submodules.w_pix = w_pix = Replicated(2 * n_slices, width=len(self.i.p.pix))
        m.d.comb += w_pix.i.eq(self.i.p.pix)
        # The read address is the drain's in a FULL bank, else the compute unit's: a select per
        # slice, from a registered copy of FULL (a cycle late: the drain issues its first
        # address two cycles after FULL rises, and the first reads of a bank claimed after FULL
        # falls belong to a group's first pass, which adds the bias, not the bank word).
        m.submodules.full = full_copies = Replicated(n_slices, width=2)
        m.d.comb += full_copies.i.eq(Cat(*(state[b] == BankState.FULL for b in range(2))))
        for b in range(2):
            m.d.comb += [self.full[b].eq(state[b] == BankState.FULL),
                         self.free[b].eq(state[b] == BankState.FREE)]
            for k in range(n_slices):
                full = full_copies.o[k][b]
                channels = slice(k * per, (k + 1) * per)
                m.submodules[f"bank{b}_{k}"] = mem = BlockRAM(
                    data.ArrayLayout(signed(32), per), self.acc_depth)
                m.d.comb += [
                    # the drain reads a FULL bank, the compute unit the one it fills
                    mem.rd_addr.eq(Mux(full, self.drain_addr, self.read.p.pix)),
                    mem.wr_addr.eq(w_pix.o[b * n_slices + k]),
                    mem.wr_data.eq(new.as_value()[32 * k * per:32 * (k + 1) * per]),
                    mem.wr_en.eq(w_en & (w_bank == b)),
                ]
                for j, o in enumerate(range(self.p_oc)[channels]):
                    m.d.comb += self.drain_data[b][o].eq(mem.rd_data[j])
            with ctrl.If(self.claim[b]):
                ctrl.d.sync += state[b].eq(BankState.COMPUTE)
            with ctrl.If(self.drained[b]):
                ctrl.d.sync += state[b].eq(BankState.FREE)
        # The addend is chosen when the word arrives, a cycle before the add: the selects fan
        # out to every bit of p_oc words, so they drive a mux into a register, not an adder,
        # and each output channel has its own copy of them (a register, then the copies:
        # BRAM_READ_LATENCY cycles behind `read`).
        m.submodules.rdata_sel = rdata_sel = Replicated(self.p_oc, width=2)
        selects = Cat(self.read.p.bank, self.read.p.first)
        for _ in range(BRAM_READ_LATENCY - 1):
            selects_q = Signal(2)
            m.d.sync += selects_q.eq(selects)
            selects = selects_q
        m.d.comb += rdata_sel.i.eq(selects)
        for o in range(self.p_oc):
            bank, first = rdata_sel.o[o][0], rdata_sel.o[o][1]  # channel o's copies
            word = Mux(bank, self.drain_data[1][o], self.drain_data[0][o])  # both banks' reads
            bias = Mux(bank, self.bias[1][o], self.bias[0][o])
            m.d.sync += rdata[o].eq(Mux(first, bias, word))
        beat = self.i.p
        for o in range(self.p_oc):
            m.d.sync += new[o].eq(rdata[o] + beat.sums[o])
        # the write, from registers; the bank is FULL once the last pixel is written
        w_last = Signal()
        m.d.sync += w_bank.eq(beat.bank)
        ctrl.d.sync += [w_en.eq(self.i.valid), w_last.eq(self.i.valid & beat.last)]
        with ctrl.If(w_last):
            ctrl.d.sync += state[w_bank].eq(BankState.FULL)
        return m

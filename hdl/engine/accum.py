"""The accumulator banks: two banks of ``acc_depth`` pixels × ``p_oc`` int32 partial sums."""

from amaranth import Array, Cat, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.bram import block_ram
from hdl.fanout import Replicated

__all__ = ["ACC_READ_LEAD", "AccBeat", "AccumulatorBanks", "BankState", "ReadAhead"]

#: Cycles between a pixel's ``read`` and its ``i`` beat: the bank is read, then registered.
ACC_READ_LEAD = 2


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
    spans three cycles: the same pixel must not come back within four (the engine's
    ``min_pass``). Each bank cycles FREE → COMPUTE (``claim``) → FULL (the ``last`` beat's write)
    → FREE (``drained``).

    Full/free flags rather than streams towards the compute unit and the drain: a bank is
    filled in pixel order over many passes and read in pooling order, so the contract between
    them is the state of the whole bank.

    The data registers are never reset; ``clear`` (a layer start) returns both banks to FREE.

    A bank word read in the cycle it is written is unspecified (:func:`hdl.bram.block_ram`),
    and never used: a pixel is written three cycles after its read and read again no sooner
    than four cycles after that read (``min_pass``), and the drain reads only a FULL bank,
    which nothing writes.

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
        Both banks' words at ``drain_addr`` of the previous cycle.
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
        w_pix = Signal.like(self.i.p.pix, reset_less=True)
        w_bank, w_en = Signal(reset_less=True), Signal()
        ports = []
        for b in range(2):
            m.submodules[f"bank{b}"] = bank = block_ram(acc_layout, self.acc_depth)
            rd, wr = bank.read_port(), bank.write_port()
            ports.append(rd)
            full = state[b] == BankState.FULL
            m.d.comb += [
                # the drain reads a FULL bank, the compute unit the one it fills
                rd.addr.eq(Mux(full, self.drain_addr, self.read.p.pix)),
                self.drain_data[b].eq(rd.data),
                self.full[b].eq(full), self.free[b].eq(state[b] == BankState.FREE),
                wr.addr.eq(w_pix), wr.data.eq(new), wr.en.eq(w_en & (w_bank == b)),
            ]
            with ctrl.If(self.claim[b]):
                ctrl.d.sync += state[b].eq(BankState.COMPUTE)
            with ctrl.If(self.drained[b]):
                ctrl.d.sync += state[b].eq(BankState.FREE)
        # The addend is chosen when the word arrives, a cycle before the add: the selects fan
        # out to every bit of p_oc words, so they drive a mux into a register, not an adder,
        # and each output channel has its own copy of them.
        m.submodules.rdata_sel = rdata_sel = Replicated(self.p_oc, width=2)
        m.d.comb += rdata_sel.i.eq(Cat(self.read.p.bank, self.read.p.first))
        for o in range(self.p_oc):
            bank, first = rdata_sel.o[o][0], rdata_sel.o[o][1]  # channel o's copies
            word = Mux(bank, ports[1].data[o], ports[0].data[o])
            bias = Mux(bank, self.bias[1][o], self.bias[0][o])
            m.d.sync += rdata[o].eq(Mux(first, bias, word))
        beat = self.i.p
        for o in range(self.p_oc):
            m.d.sync += new[o].eq(rdata[o] + beat.sums[o])
        # the write, from registers; the bank is FULL once the last pixel is written
        w_last = Signal()
        m.d.sync += [w_pix.eq(beat.pix), w_bank.eq(beat.bank)]
        ctrl.d.sync += [w_en.eq(self.i.valid), w_last.eq(self.i.valid & beat.last)]
        with ctrl.If(w_last):
            ctrl.d.sync += state[w_bank].eq(BankState.FULL)
        return m

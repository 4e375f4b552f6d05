"""A signed multiplier with the ECP5 sysDSP slice's registers, and a portable model of it."""

from amaranth import ClockSignal, Const, Instance, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MULT_LATENCY", "Multiplier"]

#: Cycles from ``a``/``b`` in to ``p`` out: input, pipeline and output register.
MULT_LATENCY = 3


class Multiplier(wiring.Component):
    """``p = a · b``, signed, with three register stages: one MULT18X18D on the ECP5.

    yosys maps a ``$mul`` onto a MULT18X18D with every register bypassed and leaves the flip-flops
    around it in the fabric, so the fabric → DSP → fabric path carries the whole multiplier delay
    (and nextpnr-ecp5 times it as ``MULT18X18D_REGS_NONE``). Instantiated directly, the slice's
    input, pipeline and output registers are used (Ref: Lattice TN1267, ECP5 sysDSP Usage Guide,
    "MULT18X18D": ``REG_INPUTA_CLK``, ``REG_INPUTB_CLK``, ``REG_PIPELINE_CLK``,
    ``REG_OUTPUT_CLK``), the multiplier sits between two of its own registers and the fabric sees
    only register-to-register routing (nextpnr's ``MULT18X18D_REGS_ALL`` timing).

    On a platform whose ``family`` is ``"ecp5"`` (Amaranth's ``LatticePlatform``) the slice is
    instantiated; elsewhere (simulation, other FPGAs) a behavioural model with the same three
    registers is elaborated, so simulation is cycle-exact with the hardware. The registers are
    never reset: a multiplier holds data, and its users tag validity alongside.

    With ``b_hold``, the B input register takes ``b`` only in cycles with ``b_en`` high and
    holds it otherwise (the slice's ``REG_INPUTB_CE`` on its own clock enable, ``CE1``): an
    operand that stays for many products (a weight) then needs no fabric register of its own.

    Parameters
    ----------
    a_width, b_width : int
        Signed operand widths, 1 to 18 each (one 18 × 18 slice).
    b_hold : bool

    Attributes
    ----------
    a : In(signed(a_width))
    b : In(signed(b_width))
    b_en : In(1)
        Only with ``b_hold``: the B input register takes ``b`` at the end of this cycle.
    p : Out(signed(a_width + b_width))
        ``a`` presented :data:`MULT_LATENCY` cycles earlier times ``b`` presented as many cycles
        earlier (with ``b_hold``: the last ``b`` taken by then).
    """

    def __init__(self, a_width, b_width, *, b_hold=False):
        for name, width in (("a_width", a_width), ("b_width", b_width)):
            if not isinstance(width, int) or not 1 <= width <= 18:
                raise ValueError(f"{name} must be an integer from 1 to 18, not {width!r}")
        self.b_hold = b_hold
        super().__init__({
            "a": In(signed(a_width)), "b": In(signed(b_width)),
            **({"b_en": In(1)} if b_hold else {}),
            "p": Out(signed(a_width + b_width)),
        })

    def elaborate(self, platform):
        m = Module()
        if getattr(platform, "family", None) == "ecp5":
            # The operands sit in the top bits of the 18-bit ports, zeros below: the slice's
            # sign bit (A17, B17) is then the operand's own sign bit, no routed sign extension
            # is needed, and the zero bits are tied inside the DSP tile (nextpnr-ecp5 ties the
            # constant A/B/C data inputs there; each sign-extension bit would be a routed pin:
            # 2 × 10 per int8 × int8 slice, 2,880 pins over the 144 slices of the MAC array).
            # The product, scaled by 2**(shift_a + shift_b), is then the top of P.
            shift_a, shift_b = 18 - len(self.a), 18 - len(self.b)
            p36 = Signal(signed(36))
            m.d.comb += self.p.eq(p36[shift_a + shift_b:])
            ports = {f"i_A{i}": self.a[i - shift_a] if i >= shift_a else Const(0, 1)
                     for i in range(18)}
            ports.update({f"i_B{i}": self.b[i - shift_b] if i >= shift_b else Const(0, 1)
                          for i in range(18)})
            ports.update({f"i_C{i}": Const(0, 1) for i in range(18)})
            ports.update({f"o_P{i}": p36[i] for i in range(36)})
            clocked = {f"p_REG_{reg}_CLK": "CLK0"
                       for reg in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")}
            if self.b_hold:
                clocked.update(p_REG_INPUTB_CE="CE1", i_CE1=self.b_en)
            m.submodules.mult = Instance(
                "MULT18X18D", **clocked, p_GSR="DISABLED",
                i_CLK0=ClockSignal(), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
                i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1),
                i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1), **ports)
        else:
            a_q = Signal.like(self.a, reset_less=True)
            b_q = Signal.like(self.b, reset_less=True)
            pipe = Signal.like(self.p, reset_less=True)
            m.d.sync += [a_q.eq(self.a),  # input registers
                         pipe.eq(a_q * b_q),  # pipeline register
                         self.p.eq(pipe)]  # output register
            with m.If(self.b_en if self.b_hold else 1):
                m.d.sync += b_q.eq(self.b)
        return m

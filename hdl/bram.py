"""Block RAM whose users never read a word in the cycle it is written."""

from amaranth.lib import memory

__all__ = ["block_ram"]


def block_ram(shape, depth):
    """A :class:`amaranth.lib.memory.Memory` (no initial contents) for a user that never uses
    the word a read port returns for an address written in the same cycle.

    A read port without ``transparent_for`` returns the old word on such a collision, in the
    simulator. The ECP5's DP16KD makes no promise across its two ports, so yosys
    (``memory_libmap``) emulates the old word with a compare of the addresses and a bypass
    register and mux on every data bit: for a 1024 × 512 accumulator bank, 531 LUTs and
    1,036 flip-flops between the block RAMs and their loads, where routing is scarcest, and an
    address compare on the path into the block RAMs' address pins. The ``no_rw_check``
    attribute tells yosys that a collision's result is never used, so the memory maps to block
    RAMs alone (Ref: yosys ``memory_libmap``, ``synth_lattice -no-rw-check``).

    Each user states in its own docstring why it never uses a colliding read.

    Parameters
    ----------
    shape : ShapeLike
    depth : int
    """
    return memory.Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1})

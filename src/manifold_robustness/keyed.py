"""Random numbers keyed by integers and computed with tensor operations, on any device: a counter-based generator.

The attacks' random starts must not depend on how examples are batched, chunked or laid out, nor on the device:
a start is a function of (seed, example index, restart) alone. A generator object per example gives that, but
draws one example at a time on the CPU, tens of microseconds each, which on a GPU costs more than the attack
itself (benchmarks/measured). Here every value is a hash of its example's key and its own position (the
counter), computed for all examples and positions at once. torch's generators take one seed each, so no
library function draws from many keys in one call; this module does.

How a value is made:
- Words are 32-bit integers held in int32 tensors, whose sums and products wrap modulo 2^32 on every backend
  (the vector instructions of CPUs and CUDA's integer multiply do; tests/test_keyed.py checks the words against
  a pure-Python reference), so the words are the same on every device, batch and thread count. Shifts are
  logical (the sign bit masked off).
- The hash is Wellons' `lowbias32` (xor-shift, multiply, xor-shift, multiply, xor-shift). A key's integers are
  absorbed one 32-bit word at a time into two lanes with different starting words, so two keys give the same
  stream only if both 32-bit lanes collide (about 2^-64).
- The word at counter c is mix((a ^ h(c)) + b) for lanes (a, b), h(c) = mix(c * 0x9E3779B9): one hash per
  value, the counter's own hash computed once for all rows.
- Uniform values in (0, 1) are the top 24 bits of a word plus one half, over 2^24: exact in float32, never 0
  or 1, symmetric about 1/2.
- Normal values come from the Box-Muller transform (both its cosine and its sine) of pairs of words, in
  float64, rounded to float32. log and cos can differ by a unit in the last place between devices and code paths; that changes the
  float32 value only when the float64 one lies within that unit of a float32 rounding boundary (about one value
  in 10^8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MASK = 0xFFFFFFFF
# Starting words of the two lanes (hexadecimal digits of pi) and the counter's odd increment (golden ratio).
LANE_A, LANE_B, GOLDEN = 0x243F6A88, 0x85A308D3, 0x9E3779B9
MAX_KEY = 2**63 - 1
WORD = torch.int32


def as_word(value: int) -> int:
    """The int32 holding the bits of the 32-bit unsigned `value`."""
    value &= MASK
    return value - 2**32 if value >= 2**31 else value


def shift_right(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of 32-bit words held in int32 (torch's >> on int32 copies the sign bit)."""
    return (x >> k) & ((1 << (32 - k)) - 1)


def mix(x: torch.Tensor) -> torch.Tensor:
    """Wellons' lowbias32 hash of 32-bit words held in int32 (products wrap modulo 2^32)."""
    x = x ^ shift_right(x, 16)
    x = x * as_word(0x7FEB352D)
    x = x ^ shift_right(x, 15)
    x = x * as_word(0x846CA68B)
    return x ^ shift_right(x, 16)


def to_words(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The low and high 32-bit words of non-negative int64 values, as int32."""
    def narrow(v: torch.Tensor) -> torch.Tensor:
        return (v - ((v >> 31) << 32)).to(WORD)  # [0, 2^32) -> the int32 with the same bits
    return narrow(value & MASK), narrow(value >> 32)


def keys(parts: Sequence[torch.Tensor | int], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 32-bit lanes of each row's key; `parts` are integers in [0, 2^63), each a tensor with one value
    per row or one int for all rows (all tensors of one length)."""
    rows = {len(p) for p in parts if isinstance(p, torch.Tensor)}
    if len(rows) > 1:
        raise ValueError(f"key parts must have one value per row, got lengths {sorted(rows)}")
    n = rows.pop() if rows else 1
    a = torch.full((n,), as_word(LANE_A), dtype=WORD, device=device)
    b = torch.full((n,), as_word(LANE_B), dtype=WORD, device=device)
    for part in parts:
        if isinstance(part, torch.Tensor):
            value = part.to(device=device, dtype=torch.int64)
            if len(value) and bool(value.min() < 0):
                raise ValueError(f"keys must be integers in [0, 2^63), got {int(value.min())}")
        else:
            if not 0 <= int(part) <= MAX_KEY:
                raise ValueError(f"keys must be integers in [0, 2^63), got {part}")
            value = torch.tensor(int(part), dtype=torch.int64, device=device)  # one value, broadcast over rows
        for word in to_words(value):
            a = mix(a ^ word)
            b = mix(b + word)
    return a, b


def words(lanes: tuple[torch.Tensor, torch.Tensor], n: int, first: int = 0) -> torch.Tensor:
    """(rows, n) words (int32) at counters first .. first + n - 1 of each row's stream: mix((a ^ h(c)) + b) for
    lanes (a, b), with h(c) = mix(c * 0x9E3779B9) computed once per counter."""
    a, b = lanes
    counter = torch.arange(first, first + n, dtype=torch.int64, device=a.device)
    hashed = mix(to_words(counter)[0] * as_word(GOLDEN))
    return mix((a[:, None] ^ hashed[None]) + b[:, None])


def unsigned(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """32-bit words as the unsigned integers they hold, in a float `dtype` (exact in float64)."""
    return w.to(dtype) + (w < 0).to(dtype) * 2**32


def uniform(lanes: tuple[torch.Tensor, torch.Tensor], n: int, first: int = 0) -> torch.Tensor:
    """(rows, n) float32 values uniform in (0, 1): the top 24 bits of each word, centred in their interval."""
    return (shift_right(words(lanes, n, first), 8).to(torch.float32) + 0.5) / 2**24


def normal(lanes: tuple[torch.Tensor, torch.Tensor], n: int, first: int = 0) -> torch.Tensor:
    """(rows, n) float32 standard normal values: the Box-Muller pairs (cosine, sine) of the words at counters
    first + j and first + m + j, m = ceil(n / 2), computed in float64."""
    m = (n + 1) // 2
    u = (unsigned(words(lanes, 2 * m, first), torch.float64) + 0.5) / 2**32
    radius = torch.sqrt(-2 * torch.log(u[:, :m]))
    angle = 2 * math.pi * u[:, m:]
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n].to(torch.float32)

"""Counter-based random numbers: every env's draws depend on its own key and counters only.

Why not one ``torch.Generator`` per env: drawing from ``N`` generators costs ``N`` calls per draw,
the very overhead the batched core removes. Here a draw is a SplitMix64 sequence (Steele, Lea,
Flood, OOPSLA 2014) whose start is hashed from ``(key, domain, counter)``: the starts are a few
numbers per env computed on the host (numpy's uint64 arithmetic wraps like the C original), the
sequences are computed for all envs at once on the device. Env ``i``'s numbers never depend on
``N`` or on the other envs, so an env of a vector env and a ``DUSEnv`` with the same seed draw the
same rows and participation masks.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_COUNTER = 0xD6E8FEB86659FD93
_DOMAIN = 0xCA5A826395121157

#: Domains: independent streams of one key.
ROW_ORDER = 1
PARTICIPATION = 2
GRADIENT_NOISE = 3


def _signed(value: int) -> int:
    """A 64-bit constant as the int64 torch stores it (two's complement)."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix_host(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 numpy arrays (wrapping arithmetic, logical shifts)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(_MIX1)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(_MIX2)
        return x ^ (x >> np.uint64(31))


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts signed integers arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix_device(x: torch.Tensor) -> torch.Tensor:
    """The same finaliser on int64 tensors (multiplication wraps modulo 2**64)."""
    x = (x ^ _shift_right(x, 30)) * _signed(_MIX1)
    x = (x ^ _shift_right(x, 27)) * _signed(_MIX2)
    return x ^ _shift_right(x, 31)


def seed_key(seed: int) -> np.uint64:
    """An env's key from its (non-negative) model seed."""
    return np.uint64(seed & _MASK64)


def sequence_starts(keys: np.ndarray, domain: int, counters: np.ndarray) -> np.ndarray:
    """Start of each sequence (uint64, the shape of ``counters``) for ``(keys[i], domain, counters[i, ...])``."""
    keys = keys.astype(np.uint64).reshape(keys.shape + (1,) * (counters.ndim - 1))
    with np.errstate(over="ignore"):
        start = _mix_host(keys * np.uint64(_GOLDEN) + np.uint64(domain * _DOMAIN & _MASK64))
        return _mix_host(start + counters.astype(np.uint64) * np.uint64(_COUNTER))


def random_values(keys: np.ndarray, domain: int, counters: np.ndarray, width: int, device: torch.device) -> torch.Tensor:
    """Random int64 values ``counters.shape + (width,)``: the first ``width`` numbers of the sequence
    of ``(keys[i], domain, counters[i, ...])``.

    Value ``r`` of a sequence does not depend on ``width``, so a row padded to a batch's width holds
    the same numbers as the unpadded row of a lone env. Sorting the first ``n`` values of a row gives a
    uniformly random permutation of ``n`` positions (ties have probability about ``n**2 / 2**64``),
    which is all the core needs: epoch orders and participation subsets.

    :param keys: uint64 ``[k]``, one per env (:func:`seed_key`).
    :param domain: which stream (``ROW_ORDER``, ``PARTICIPATION``, ...), so that streams never collide.
    :param counters: integers ``[k, ...]``: the epoch, the iteration, ... of each sequence.
    """
    starts = torch.from_numpy(np.ascontiguousarray(sequence_starts(keys, domain, counters)).view(np.int64)).to(device)
    steps = torch.arange(1, width + 1, dtype=torch.int64, device=device) * _signed(_GOLDEN)
    return _mix_device(starts.unsqueeze(-1) + steps)


def to_uniform(values: torch.Tensor) -> torch.Tensor:
    """Float64 uniforms in ``(0, 1)`` from :func:`random_values` output (the top 53 bits, centred in their cell)."""
    return (_shift_right(values, 11).double() + 0.5) * 2.0**-53


def normal_rows(keys: np.ndarray, domain: int, counters: np.ndarray, width: int, device: torch.device) -> torch.Tensor:
    """Float32 ``N(0, 1)`` draws ``[k, width]``: row ``i`` from a ``torch.Generator`` seeded with the
    sequence start of ``(keys[i], domain, counters[i])``.

    Why not :func:`random_values`: hashing costs tens of nanoseconds per value, a generator one or
    two, and wide draws (noise as large as a model's weights) are all generator time; one
    generator per row costs microseconds, nothing next to such a row. Row ``i`` still depends on
    its own key and counter only.
    """
    starts = sequence_starts(keys, domain, counters)
    rows = torch.empty(len(starts), width, device=device)
    for row, start in zip(rows, starts.tolist()):
        row.normal_(generator=torch.Generator(device=device).manual_seed(start))
    return rows

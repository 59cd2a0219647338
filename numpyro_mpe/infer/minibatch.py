"""Which examples a minibatch step sees: a keyed permutation per epoch, O(B) per step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

__all__ = ["check_batch_size", "minibatch_indices"]

# Rounds of the keyed bijection in ``_permute``: each is xor, odd multiply, xorshift and
# add, all invertible modulo 2^bits. With four rounds batch membership and pair
# co-occurrence are at their uniform-shuffle values (tests/infer/test_minibatch.py), and so was
# the position-index correlation when this was written (N = 3020, 2000 keys).
_PERMUTATION_ROUNDS = 4


def _permute(key: jax.Array, positions: jax.Array, num_examples: int) -> jax.Array:
    """``pi(positions)`` for a pseudorandom permutation ``pi`` of ``range(N)`` keyed by ``key``.

    A keyed bijection of ``[0, 2^bits)`` (``2^bits < 2 N``) restricted to ``[0, N)`` by
    cycle walking (apply it again until the value lands in range), so each position is
    computed on its own: O(B) for B positions, where ``jax.random.permutation`` of all N
    (a sort) would cost O(N log N) per step (21 ms at N = 1e5, against ~100 us for a
    B = 256 gradient).
    """
    bits = max(1, (num_examples - 1).bit_length())
    mask = jnp.uint32((1 << bits) - 1)
    shift = max(1, (bits + 1) // 2)
    round_keys = jax.random.bits(key, (_PERMUTATION_ROUNDS, 3), jnp.uint32)

    def bijection(x):
        for xor_key, multiplier, offset in round_keys:
            x = (x ^ xor_key) & mask
            x = (x * (multiplier | jnp.uint32(1))) & mask
            x = x ^ (x >> shift)
            x = (x + offset) & mask
        return x

    def walk(x):
        return jnp.where(x >= num_examples, bijection(x), x)

    x = bijection(jnp.asarray(positions, jnp.uint32))
    x = jax.lax.while_loop(lambda x: jnp.any(x >= num_examples), walk, x)
    return x.astype(jnp.int32)


def minibatch_indices(
    data_key: jax.Array, step: ArrayLike, batch_size: int, num_examples: int
) -> jax.Array:
    """Indices ``(B,)`` of the examples in minibatch ``step``.

    Epoch ``e = step // ceil(N / B)`` visits the examples in the order of a fresh
    pseudorandom permutation keyed by ``fold_in(data_key, e)``, ``B`` at a time; the last
    batch of an epoch, when ``B`` does not divide ``N``, is filled up with the first
    examples of that epoch's order. So every example is seen at least once per epoch and
    every batch holds ``B`` distinct examples, a uniformly random subset (which keeps the
    ``N / B``-scaled loss unbiased).
    """
    steps_per_epoch = -(-num_examples // batch_size)
    epoch, index = jnp.divmod(step, steps_per_epoch)
    positions = (index * batch_size + jnp.arange(batch_size)) % num_examples
    return _permute(jax.random.fold_in(data_key, epoch), positions, num_examples)


def check_batch_size(batch_size: int, num_examples: int) -> None:
    """Raise ``ValueError`` unless ``1 <= batch_size <= num_examples``."""
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must be in [1, {num_examples}], got {batch_size}")

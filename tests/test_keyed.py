"""The counter-based generator of the attacks' random starts (`keyed`): its words against a plain-Python
reference, independence from batch and device, its distributions, and distinct streams for distinct keys.

Each distribution check runs on the generator (it must pass) and on a generator known to be wrong (it must fail),
so that none of them passes whatever it is given."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from manifold_robustness import keyed
from manifold_robustness.attacks import STARTS, restart_noise

MASK = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------------------
# A plain-Python reference of the documented construction (unsigned 32-bit words, no tensors)
# ---------------------------------------------------------------------------------------------------------------


def ref_mix(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def ref_keys(parts: list[int]) -> tuple[int, int]:
    a, b = 0x243F6A88, 0x85A308D3
    for value in parts:
        for word in (value & MASK, value >> 32):
            a = ref_mix(a ^ word)
            b = ref_mix((b + word) & MASK)
    return a, b


def ref_word(lanes: tuple[int, int], counter: int) -> int:
    a, b = lanes
    return ref_mix(((a ^ ref_mix((counter * 0x9E3779B9) & MASK)) + b) & MASK)


def unsigned(words: torch.Tensor) -> list[int]:
    return [w & MASK for w in words.tolist()]


@pytest.mark.parametrize("parts", [[0, 0, 0, 0], [11, 5, 2, 1], [2**40 + 3, 123456789, 4, 0], [2**63 - 1, 2**33, 7, 1]])
def test_words_equal_the_plain_python_reference(parts):
    """The tensor words are the documented hash exactly (int32 wrapping included), for keys above 2^32 too."""
    lanes = keyed.keys([torch.tensor([p]) if i == 1 else p for i, p in enumerate(parts)], "cpu")
    assert (unsigned(lanes[0])[0], unsigned(lanes[1])[0]) == ref_keys(parts)
    got = unsigned(keyed.words(lanes, 40, first=7)[0])
    assert got == [ref_word(ref_keys(parts), c) for c in range(7, 47)]


def test_uniform_and_normal_values_follow_from_the_words():
    lanes = keyed.keys([3, torch.tensor([9, 10]), 1], "cpu")
    w = [unsigned(row) for row in keyed.words(lanes, 6)]
    expected = torch.tensor([[((x >> 8) + 0.5) / 2**24 for x in row] for row in w], dtype=torch.float32)
    assert torch.equal(keyed.uniform(lanes, 6), expected)
    u = [[(x + 0.5) / 2**32 for x in row] for row in w]
    normal = keyed.normal(lanes, 5)  # pairs from counters (j, j + 3), cosines then sines
    for row in range(2):
        r = [math.sqrt(-2 * math.log(u[row][j])) for j in range(3)]
        values = [r[j] * math.cos(2 * math.pi * u[row][3 + j]) for j in range(3)] + \
                 [r[j] * math.sin(2 * math.pi * u[row][3 + j]) for j in range(2)]
        torch.testing.assert_close(normal[row], torch.tensor(values, dtype=torch.float32), rtol=0, atol=1e-6)


def test_keys_name_bad_input():
    with pytest.raises(ValueError, match=r"keys must be integers in \[0, 2\^63\), got -1"):
        keyed.keys([torch.tensor([0, -1])], "cpu")
    with pytest.raises(ValueError, match=r"keys must be integers in \[0, 2\^63\), got -5"):
        keyed.keys([-5, torch.tensor([0])], "cpu")
    with pytest.raises(ValueError, match=r"one value per row, got lengths \[2, 3\]"):
        keyed.keys([torch.tensor([0, 1]), torch.tensor([0, 1, 2])], "cpu")


# ---------------------------------------------------------------------------------------------------------------
# Independence from batch, order and device
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (10,), (6,), (3, 5)])
def test_an_example_draws_the_same_start_in_any_batch(start, shape):
    """Alone, in a batch of 257, at another position, with per-row seeds and restarts: bit for bit."""
    indices = torch.arange(1000, 1257)
    batch = restart_noise(indices, 3, shape, 17, start)
    for row in (0, 100, 256):
        alone = restart_noise(indices[row:row + 1], 3, shape, 17, start)
        assert torch.equal(alone[0], batch[row])
    reversed_ = restart_noise(indices.flip(0), 3, shape, 17, start)
    assert torch.equal(reversed_.flip(0), batch)
    mixed = restart_noise(torch.tensor([1100, 1100]), torch.tensor([3, 4]), shape, torch.tensor([17, 17]), start)
    assert torch.equal(mixed[0], batch[100])
    assert torch.equal(mixed[1], restart_noise(torch.tensor([1100]), 4, shape, 17, start)[0])


def test_the_thread_count_does_not_change_a_start():
    indices = torch.arange(3000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = restart_noise(indices, 0, (1, 28, 28), 5, "distance_direction")
        torch.set_num_threads(max(2, threads))
        many = restart_noise(indices, 0, (1, 28, 28), 5, "distance_direction")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
@pytest.mark.parametrize("start", STARTS)
def test_a_start_is_the_same_on_the_gpu(start):
    indices = torch.arange(500)
    cpu = restart_noise(indices, 2, (1, 28, 28), 9, start)
    gpu = restart_noise(indices.cuda(), 2, (1, 28, 28), 9, start)
    assert gpu.device.type == "cuda"
    assert torch.equal(keyed.words(keyed.keys([9, indices, 2], "cuda"), 64).cpu(),
                       keyed.words(keyed.keys([9, indices, 2], "cpu"), 64))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-7)


def test_the_draw_follows_the_indices_device_not_the_default_one():
    with torch.device("meta"):
        noise = restart_noise(torch.arange(4, device="cpu"), 0, (3,), 1, "distance_direction")
    assert noise.device.type == "cpu" and noise.abs().max() <= 1


# ---------------------------------------------------------------------------------------------------------------
# Distributions: each check passes the generator and fails a wrong one
# ---------------------------------------------------------------------------------------------------------------


def ks_pvalue(values: torch.Tensor, cdf: str) -> float:
    return float(stats.kstest(values.double().flatten().numpy(), cdf).pvalue)


def test_uniform_values_are_uniform_and_a_skewed_generator_is_not():
    values = keyed.uniform(keyed.keys([1, torch.arange(400)], "cpu"), 500)  # 200,000 values
    assert values.min() > 0 and values.max() < 1
    assert ks_pvalue(values, "uniform") > 1e-3
    assert ks_pvalue(values ** 1.02, "uniform") < 1e-6  # a 2% skew is found
    # Each bit of the words is fair: 200,000 draws per bit, standard error 0.0011.
    words = keyed.words(keyed.keys([1, torch.arange(400)], "cpu"), 500)
    bits = torch.stack([(words >> k) & 1 for k in range(32)]).flatten(1).double().mean(dim=1)
    assert (bits - 0.5).abs().max() < 0.006
    assert ((torch.stack([(words * 2 >> k) & 1 for k in range(32)]).flatten(1).double().mean(dim=1) - 0.5).abs()
            .max() > 0.4)  # the lowest bit of 2w is always 0: the check sees it


def test_normal_values_are_standard_normal_and_scaled_ones_are_not():
    values = keyed.normal(keyed.keys([2, torch.arange(400)], "cpu"), 501)  # odd: the last sine dropped
    assert values.shape == (400, 501)
    assert ks_pvalue(values, "norm") > 1e-3
    assert ks_pvalue(values * 1.05, "norm") < 1e-6  # a 5% wider spread is found
    # Cosines and sines of one pair are uncorrelated; so are neighbouring coordinates.
    v = values.double()
    for a, b in ((v[:, :250], v[:, 251:501]), (v[:, :-1], v[:, 1:])):
        r = float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
        assert abs(r) < 4 / math.sqrt(a.numel())


def test_distinct_keys_give_independent_streams():
    """Neighbouring seeds, indices and restarts: no two of 30,000 keys share their first 64 bits, and the
    correlation between the streams of neighbouring keys is that of independent ones."""
    index = torch.arange(10_000)
    streams = [keyed.words(keyed.keys([seed, index, restart], "cpu"), 2) for seed, restart in ((0, 0), (1, 0), (0, 1))]
    first64 = torch.cat(streams)
    assert len(first64.unique(dim=0)) == len(first64)
    u = [keyed.uniform(keyed.keys([seed, index, restart], "cpu"), 64).double().flatten()
         for seed, restart in ((0, 0), (1, 0), (0, 1))]
    shifted = keyed.uniform(keyed.keys([0, index + 1, 0], "cpu"), 64).double().flatten()
    bound = 4 / math.sqrt(len(u[0]))
    for other in (u[1], u[2], shifted):
        assert abs(float(torch.corrcoef(torch.stack([u[0], other]))[0, 1])) < bound
    # The check sees dependence: a stream that shares a tenth of another's value.
    assert float(torch.corrcoef(torch.stack([u[0], 0.1 * u[0] + 0.9 * u[1]]))[0, 1]) > bound


@pytest.mark.parametrize("start", STARTS)
def test_the_two_starts_draw_from_separate_streams(start):
    other = STARTS[1 - STARTS.index(start)]
    a = restart_noise(torch.arange(2000), 0, (20,), 3, start).flatten().double()
    b = restart_noise(torch.arange(2000), 0, (20,), 3, other).flatten().double()
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 4 / math.sqrt(len(a))


def test_uniform_start_fills_the_unit_cube_evenly():
    u = restart_noise(torch.arange(2000), 1, (1, 28, 28), 4, "uniform")
    assert u.min() > -1 and u.max() < 1
    assert ks_pvalue((u + 1) / 2, "uniform") > 1e-3
    assert np.isclose(float(u.mean()), 0, atol=0.005)

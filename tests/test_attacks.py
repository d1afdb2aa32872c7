"""L_inf PGD and the box-attack engine, on the small FONTS classifier of conftest.

Exactness tests (batch vs one by one, sequential vs folded restarts) run the model in float64, so that
different batch compositions cannot change a gradient sign through float32 rounding.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manifold_robustness import keyed
from manifold_robustness.attacks import (
    STARTS,
    AttackConfig,
    AttackResult,
    box_attack,
    pgd,
    pgd_adversary,
    resolve_layout,
    restart_noise,
    success_rates,
    training_config,
)
from manifold_robustness.training import predict
from manifold_robustness.transformer import PRESETS, decode

OPTIMIZERS = ("sign", "adam")
EPS_MID = 0.03  # success rate of the fixture model is intermediate (about 0.2-0.4) at this radius


def config(**kw) -> AttackConfig:
    base = {"eps": 0.05, "steps": 20, "step_size": 0.01, "restarts": 2, "layout": "sequential"}
    return AttackConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def double_model(trained_model):
    return copy.deepcopy(trained_model).double().eval()


def assert_same_result(a: AttackResult, b: AttackResult, atol: float = 0.0) -> None:
    assert torch.equal(a.clean_pred, b.clean_pred)
    assert torch.equal(a.success, b.success)
    assert torch.equal(a.steps_to_success, b.steps_to_success)
    assert torch.equal(a.pred, b.pred)
    torch.testing.assert_close(a.variables, b.variables, atol=atol, rtol=0)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5)


def test_fixture_model_is_accurate(trained_model, test_tensors):
    images, labels = test_tensors
    accuracy = float((predict(trained_model, images) == labels).float().mean())
    assert accuracy > 0.8


@pytest.mark.parametrize("early_stop", [True, False])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_adversarial_examples_stay_in_eps_ball_and_unit_box(trained_model, attack_set, optimizer, early_stop):
    x, y, index = attack_set
    eps = 0.05
    result = pgd(trained_model, x, y, config(eps=eps, optimizer=optimizer, early_stop=early_stop), indices=index)
    v = result.variables
    assert v.shape == (len(x), 2, 1, 28, 28) and v.dtype == x.dtype
    assert result.success.shape == result.loss.shape == result.pred.shape == (len(x), 2)
    delta = (v - x[:, None]).abs()
    assert delta.max() <= eps + 1e-6
    assert v.min() >= 0 and v.max() <= 1
    assert delta.max() > eps / 2  # the attack did move the images
    rates = success_rates(result.success, result.correct)
    assert 0 < rates["success"] < 1


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_eps_zero_gives_clean_accuracy(trained_model, attack_set, optimizer, start):
    x, y, index = attack_set
    result = pgd(trained_model, x, y, config(eps=0.0, steps=5, optimizer=optimizer, start=start), indices=index)
    clean_correct = predict(trained_model, x) == y
    assert torch.equal(result.correct, clean_correct)
    assert 0 < int((~clean_correct).sum()), "want some misclassified clean images to make the check meaningful"
    rates = success_rates(result.success, result.correct)
    assert rates["robust_accuracy"] == int(clean_correct.sum()) / len(x)
    assert rates["success"] == 0 and rates["success_any"] == 0
    assert rates["n_correct"] == int(clean_correct.sum()) and rates["n_attacked"] == len(x)
    assert torch.equal(result.variables, x[:, None].expand_as(result.variables))
    # Misclassified clean images count as "successful" restarts (at step 0) but are excluded from the rates.
    assert torch.equal(result.success, (~clean_correct)[:, None].expand(-1, 2))


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_more_steps_never_lower_success(trained_model, attack_set, optimizer):
    x, y, index = attack_set
    results = {s: pgd(trained_model, x, y, config(eps=EPS_MID, steps=s, restarts=3, optimizer=optimizer),
                      indices=index) for s in (5, 20, 40)}
    rates = {s: success_rates(r.success, r.correct) for s, r in results.items()}
    for s in rates:
        assert 0 < rates[s]["success_any"] < 1, rates
    for short, long in ((5, 20), (20, 40)):
        a, b = results[short], results[long]
        # Per (example, restart): the short run is a prefix of the long one.
        assert not (a.success & ~b.success).any()
        assert torch.equal(a.steps_to_success[a.success], b.steps_to_success[a.success])
        assert rates[long]["success"] >= rates[short]["success"]
        assert rates[long]["success_any"] >= rates[short]["success_any"]
    assert int(results[40].success.sum()) > int(results[5].success.sum())


def _restart_runs(model, x, y, index, optimizer, layout):
    return {r: pgd(model, x, y, config(eps=EPS_MID, restarts=r, optimizer=optimizer, layout=layout), indices=index)
            for r in (1, 2, 3, 5)}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_more_restarts_never_lower_success_any(trained_model, attack_set, optimizer):
    x, y, index = attack_set
    runs = _restart_runs(trained_model, x, y, index, optimizer, "sequential")
    any_rate = [success_rates(runs[r].success, runs[r].correct)["success_any"] for r in (1, 3, 5)]
    assert any_rate[0] <= any_rate[1] <= any_rate[2]
    assert 0 < any_rate[0] and any_rate[2] < 1
    # Restart r does the same thing whatever the number of restarts.
    for r in (2, 3):
        assert torch.equal(runs[r].success, runs[5].success[:, :r])
        assert torch.equal(runs[r].steps_to_success, runs[5].steps_to_success[:, :r])
        assert torch.equal(runs[r].variables, runs[5].variables[:, :r])
    # Different restarts start from different points.
    assert not torch.equal(runs[5].variables[:, 0], runs[5].variables[:, 1])


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_restart_prefix_in_folded_layout(double_model, attack_set, optimizer):
    x, y, index = attack_set
    x = x[:60].double()
    runs = _restart_runs(double_model, x, y[:60], index[:60], optimizer, "folded")
    for r in (2, 3):
        assert torch.equal(runs[r].success, runs[5].success[:, :r])
        assert torch.equal(runs[r].steps_to_success, runs[5].steps_to_success[:, :r])
        torch.testing.assert_close(runs[r].variables, runs[5].variables[:, :r], atol=1e-9, rtol=0)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_batch_equals_one_by_one(double_model, attack_set, optimizer):
    x, y, index = attack_set
    n = 24
    x, y, index = x[:n].double(), y[:n], index[:n]
    cfg = config(optimizer=optimizer)
    batch = pgd(double_model, x, y, cfg, indices=index)
    assert batch.variables.dtype == torch.float64
    assert batch.success.any() and not batch.success.all()
    singles = [pgd(double_model, x[i:i + 1], y[i:i + 1], cfg, indices=index[i:i + 1]) for i in range(n)]
    joined = AttackResult(
        labels=y, clean_pred=torch.cat([s.clean_pred for s in singles]),
        variables=torch.cat([s.variables for s in singles]), success=torch.cat([s.success for s in singles]),
        loss=torch.cat([s.loss for s in singles]), pred=torch.cat([s.pred for s in singles]),
        steps_to_success=torch.cat([s.steps_to_success for s in singles]))
    assert_same_result(batch, joined, atol=1e-8)
    # Chunking by batch_size does not matter either.
    chunked = pgd(double_model, x, y, config(optimizer=optimizer, batch_size=7), indices=index)
    assert_same_result(batch, chunked, atol=1e-8)


def test_batch_equals_one_by_one_float32_sign(trained_model, attack_set):
    """With signed steps the float32 attack is also independent of the batch (on this CPU)."""
    x, y, index = attack_set
    n = 16
    cfg = config()
    batch = pgd(trained_model, x[:n], y[:n], cfg, indices=index[:n])
    for i in range(n):
        single = pgd(trained_model, x[i:i + 1], y[i:i + 1], cfg, indices=index[i:i + 1])
        assert torch.equal(single.success[0], batch.success[i])
        torch.testing.assert_close(single.variables[0], batch.variables[i], atol=1e-6, rtol=0)


def test_random_starts_depend_on_example_identity(trained_model, attack_set):
    """With no steps and no early stop the kept variable is the random start clip(x + eps * noise(seed, index, r))."""
    x, y, index = attack_set
    x, y, index = x[:10], y[:10], index[:10]
    eps = 0.1
    cfg = config(eps=eps, steps=0, restarts=3, early_stop=False, seed=11)
    result = pgd(trained_model, x, y, cfg, indices=index)
    for r in range(3):
        noise = restart_noise(index, r, (1, 28, 28), seed=11)
        expected = torch.minimum(torch.maximum(x + eps * noise, (x - eps).clamp(0, 1)), (x + eps).clamp(0, 1))
        torch.testing.assert_close(result.variables[:, r], expected, atol=1e-7, rtol=0)
    # Without `indices` the examples are numbered 0..n-1, so their starts differ.
    default = pgd(trained_model, x, y, cfg)
    assert not torch.equal(default.variables, result.variables)
    # The same examples in another order keep their starts.
    perm = torch.tensor([3, 1, 4, 0, 9, 2, 6, 5, 8, 7])
    shuffled = pgd(trained_model, x[perm], y[perm], cfg, indices=index[perm])
    assert torch.equal(shuffled.variables, result.variables[perm])


def test_restart_noise_is_keyed_by_seed_index_restart():
    a = restart_noise(torch.tensor([3, 7, 11]), 2, (4, 5), seed=0)
    assert a.shape == (3, 4, 5) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(restart_noise(torch.tensor([7]), 2, (4, 5), seed=0)[0], a[1])
    assert not torch.equal(restart_noise(torch.tensor([7]), 1, (4, 5), seed=0)[0], a[1])
    assert not torch.equal(restart_noise(torch.tensor([7]), 2, (4, 5), seed=1)[0], a[1])
    big = restart_noise(torch.arange(50), 0, (28, 28), seed=0)
    assert abs(float(big.mean())) < 0.01 and float(big.abs().max()) > 0.999


def test_per_model_seeds_split_rows_into_equal_blocks():
    """Stacked models (`stacked.py`) are attacked in one call, their rows in equal blocks, one seed each."""
    cfg = AttackConfig(seed=(5, 9))
    assert cfg.row_seeds(4) == [5, 5, 9, 9]
    assert AttackConfig(seed=2).row_seeds(3) == [2, 2, 2]
    with pytest.raises(ValueError, match="5 rows cannot be split into equal blocks for 2 stacked models"):
        cfg.row_seeds(5)
    with pytest.raises(ValueError, match=r"^seed must be an int or one int per stacked model, got an empty tuple$"):
        AttackConfig(seed=())
    index = torch.tensor([4, 4])
    noise = restart_noise(index, 0, (3,), [1, 2])
    assert torch.equal(noise[0], restart_noise(index[:1], 0, (3,), 1)[0])
    assert torch.equal(noise[1], restart_noise(index[:1], 0, (3,), 2)[0])
    with pytest.raises(ValueError, match="2 examples, 1 seeds"):
        restart_noise(index, 0, (3,), [1])


def test_a_seed_per_block_attacks_each_block_as_its_seed_alone(trained_model, attack_set):
    """With one seed per block of rows, each block gets exactly the starts, and so the result, of an attack on it
    alone with that block's seed (the model is one here; stacked models differ per block)."""
    images, labels, index = attack_set
    x, y, idx = images[:30], labels[:30], index[:30]
    cfg = AttackConfig(eps=0.3, steps=3, step_size=0.05, restarts=2, early_stop=False, start="distance_direction",
                       batch_size=7)
    together = pgd(trained_model, x, y, AttackConfig(**{**cfg.__dict__, "seed": (4, 11, 2)}), indices=idx)
    for block, seed in enumerate((4, 11, 2)):
        rows = slice(10 * block, 10 * (block + 1))
        alone = pgd(trained_model, x[rows], y[rows], AttackConfig(**{**cfg.__dict__, "seed": seed}), indices=idx[rows])
        assert torch.equal(together.variables[rows], alone.variables)
        torch.testing.assert_close(together.loss[rows], alone.loss)  # other batch compositions: float rounding
    with pytest.raises(ValueError, match="30 rows cannot be split into equal blocks for 4 stacked models"):
        pgd(trained_model, x, y, AttackConfig(**{**cfg.__dict__, "seed": (1, 2, 3, 4)}), indices=idx)


def test_distance_direction_distance_is_uniform_in_zero_one():
    """L_inf norms of 4000 offsets against U[0, 1]: an empirical p-quantile of n uniform draws has standard error
    sqrt(p (1 - p) / n) (density 1), at most 0.008 here; each of the nine deciles must lie within 4 of them."""
    n = 4000
    u = restart_noise(torch.arange(n), 0, (1, 28, 28), seed=0, start="distance_direction").flatten(1)
    r = u.abs().amax(dim=1).double()
    assert r.min() >= 0 and r.max() <= 1
    for p in np.arange(1, 10) / 10:
        assert abs(float(torch.quantile(r, p)) - p) <= 4 * np.sqrt(p * (1 - p) / n), p
    # The distance is attained by one coordinate, the others spread like a Gaussian's, not uniformly.
    assert ((u.abs() == r[:, None].float()).sum(dim=1) == 1).all()
    uniform = restart_noise(torch.arange(n), 0, (1, 28, 28), seed=0).flatten(1)
    ratio = lambda v: (v.norm(dim=1) / v.abs().amax(dim=1)).median()  # noqa: E731
    # 784 coordinates: about sqrt(784 / 3) = 16.2 for the uniform start; here 28 / max|g|, max|g| near 3.3.
    assert 15 < ratio(uniform) < 17.5 and 7.5 < ratio(u) < 10


def test_distance_direction_is_keyed_by_seed_index_restart():
    a = restart_noise(torch.tensor([3, 7, 11]), 2, (4, 5), seed=0, start="distance_direction")
    assert torch.equal(restart_noise(torch.tensor([7]), 2, (4, 5), seed=0, start="distance_direction")[0], a[1])
    assert not torch.equal(restart_noise(torch.tensor([7]), 1, (4, 5), seed=0, start="distance_direction")[0], a[1])
    assert not torch.equal(restart_noise(torch.tensor([7]), 2, (4, 5), seed=1, start="distance_direction")[0], a[1])
    assert not torch.equal(restart_noise(torch.tensor([7]), 2, (4, 5), seed=0)[0], a[1])


@pytest.mark.parametrize("steps", [0, 10])
@pytest.mark.parametrize("start", STARTS)
def test_starts_stay_in_eps_ball_and_unit_box(trained_model, attack_set, start, steps):
    """With no steps the kept variable is the start clip(x + eps * offset) itself; after steps it stays inside."""
    x, y, index = attack_set
    eps = 0.1
    cfg = config(eps=eps, steps=steps, restarts=3, early_stop=False, start=start, seed=5)
    v = pgd(trained_model, x, y, cfg, indices=index).variables
    assert (v - x[:, None]).abs().max() <= eps + 1e-6
    assert v.min() >= 0 and v.max() <= 1
    if steps == 0:
        for r in range(3):
            offset = restart_noise(index, r, (1, 28, 28), seed=5, start=start)
            expected = torch.minimum(torch.maximum(x + eps * offset, (x - eps).clamp(0, 1)), (x + eps).clamp(0, 1))
            torch.testing.assert_close(v[:, r], expected, atol=1e-7, rtol=0)


@pytest.mark.parametrize("start", STARTS)
def test_batch_size_does_not_change_either_start(double_model, attack_set, start):
    x, y, index = attack_set
    x, y, index = x[:16].double(), y[:16], index[:16]
    whole = pgd(double_model, x, y, config(start=start, steps=10, batch_size=16), indices=index)
    singles = pgd(double_model, x, y, config(start=start, steps=10, batch_size=1), indices=index)
    assert whole.success.any() and not whole.success.all()
    assert_same_result(whole, singles, atol=1e-8)


def test_attack_records_name_their_start(tmp_path, trained_model, attack_set):
    """The workflow's config sections reach AttackConfig (eta renamed eps) and the record's attributes."""
    import h5py

    from manifold_robustness.attack_io import save_attack
    from manifold_robustness.stages import attack_config

    cfg = attack_config({"eta": 0.1, "steps": 2, "restarts": 1, "start": "distance_direction", "n_test": 5})
    assert (cfg.eps, cfg.start) == (0.1, "distance_direction")
    x, y, index = attack_set
    save_attack(tmp_path / "pgd.h5", pgd(trained_model, x[:5], y[:5], cfg, indices=index[:5]), index[:5].numpy(), cfg)
    with h5py.File(tmp_path / "pgd.h5") as h5:
        assert h5.attrs["config.start"] == "distance_direction"


def test_attack_config_rejects_an_unknown_start():
    with pytest.raises(ValueError, match=r"start must be one of \('uniform', 'distance_direction'\)"):
        AttackConfig(start="gaussian")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_sequential_equals_folded(double_model, attack_set, optimizer):
    x, y, index = attack_set
    x = x.double()
    seq = pgd(double_model, x, y, config(restarts=3, optimizer=optimizer, layout="sequential"), indices=index)
    fold = pgd(double_model, x, y, config(restarts=3, optimizer=optimizer, layout="folded"), indices=index)
    assert seq.success.any() and not seq.success.all()
    assert_same_result(seq, fold, atol=1e-9)
    # Several batches, the last one short: each batch's restarts are unfolded from their own rows.
    small = pgd(double_model, x[:40], y[:40], config(restarts=3, optimizer=optimizer, layout="folded",
                                                       batch_size=16), indices=index[:40])
    assert_same_result(small, pgd(double_model, x[:40], y[:40], config(restarts=3, optimizer=optimizer),
                                  indices=index[:40]), atol=1e-9)


def test_layout_resolution():
    assert resolve_layout("auto", torch.device("cpu")) == "sequential"
    assert resolve_layout("auto", torch.device("cuda")) == "folded"
    assert resolve_layout("folded", torch.device("cpu")) == "folded"


@pytest.mark.parametrize("start_training", [True, False])
def test_model_mode_and_inputs_are_left_alone(trained_model, attack_set, start_training):
    model = copy.deepcopy(trained_model)
    model.train(start_training)
    state = copy.deepcopy(model.state_dict())
    x, y, index = attack_set
    x, y = x[:50], y[:50]
    x_before, y_before = x.clone(), y.clone()
    result = pgd(model, x, y, config(restarts=2), indices=index[:50])
    assert model.training == start_training
    assert all(m.training == start_training for m in model.modules())
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    for key, value in model.state_dict().items():  # BN running stats untouched: the attack ran in eval mode
        assert torch.equal(value, state[key]), key
    assert all(p.grad is None for p in model.parameters())
    # The attack runs in eval mode whatever the starting mode: same result as the eval-mode fixture model.
    reference = pgd(trained_model, x, y, config(restarts=2), indices=index[:50])
    assert torch.equal(result.success, reference.success)
    assert torch.equal(result.variables, reference.variables)


def test_model_mode_restored_when_attack_fails(trained_model, attack_set):
    model = copy.deepcopy(trained_model).train()
    x, y, _ = attack_set

    def broken_decode(v, rows):
        raise RuntimeError("decoder exploded")

    with pytest.raises(RuntimeError, match="decoder exploded"):
        box_attack(model, broken_decode, x[:4], x[:4], x[:4], y[:4], config())
    assert model.training


@pytest.mark.parametrize("shift", [0.5, -0.5])
def test_images_outside_unit_interval_raise(trained_model, attack_set, shift):
    x, y, _ = attack_set
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(trained_model, x[:4] + shift, y[:4], config())


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_early_stopped_successes_are_misclassified(trained_model, attack_set, optimizer):
    x, y, index = attack_set
    steps = 20
    result = pgd(trained_model, x, y, config(restarts=3, steps=steps, optimizer=optimizer), indices=index)
    s = result.success
    assert s.any() and not s.all()
    labels = y[:, None].expand_as(s)
    assert (result.pred[s] != labels[s]).all()
    assert (result.steps_to_success[s] >= 0).all() and (result.steps_to_success[s] <= steps).all()
    assert (result.steps_to_success[~s] == -1).all()
    assert (result.pred[~s] == labels[~s]).all()
    # The recorded prediction and loss are those of the kept example.
    flat = result.variables.flatten(0, 1)
    with torch.no_grad():
        logits = trained_model(flat)
    assert torch.equal(logits.argmax(1).view_as(s), result.pred)
    recomputed = F.cross_entropy(logits, labels.flatten(), reduction="none").view_as(s)
    torch.testing.assert_close(result.loss, recomputed, atol=1e-4, rtol=1e-4)
    # With eps = 0 every start is the clean image: clean-misclassified examples succeed at step 0, no other does.
    zero = pgd(trained_model, x, y, config(eps=0.0, restarts=1, steps=steps, optimizer=optimizer), indices=index)
    assert (~zero.correct).any()
    assert (zero.steps_to_success[~zero.correct] == 0).all() and (zero.steps_to_success[zero.correct] == -1).all()


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_without_early_stop_the_highest_loss_iterate_is_kept(trained_model, attack_set, optimizer):
    x, y, index = attack_set
    runs = {s: pgd(trained_model, x, y, config(steps=s, early_stop=False, optimizer=optimizer), indices=index)
            for s in (0, 5, 20)}
    assert (runs[5].loss >= runs[0].loss).all() and (runs[20].loss >= runs[5].loss).all()
    assert (runs[20].loss > runs[0].loss).float().mean() > 0.9
    for r in runs.values():
        assert torch.equal(r.success, r.pred != y[:, None])


def codes_problem(fonts_data, glyph_bank, n: int):
    """The first n FONTS test images as transformation codes in the moderate box, with their true decoder."""
    d = fonts_data["test"]
    glyphs = torch.from_numpy(glyph_bank[0])
    font, label = torch.from_numpy(d["font"][:n]), torch.from_numpy(d["labels"][:n])
    codes = torch.from_numpy(d["codes"][:n])
    ranges = PRESETS["moderate"]
    lo, hi = ranges.low.expand(n, 6).clone(), ranges.high.expand(n, 6).clone()

    def decode_codes(v, rows):
        return decode(glyphs, font[rows], label[rows], v)

    return decode_codes, codes, lo, hi, label, glyphs, font


def test_box_attack_on_transformation_codes(trained_model, fonts_data, glyph_bank):
    """The engine with a non-identity decoder: variables stay in their box, successes fool the model."""
    n = 40
    decode_codes, codes, lo, hi, label, glyphs, font = codes_problem(fonts_data, glyph_bank, n)

    cfg = config(eps=1.0, steps=10, step_size=0.02, restarts=2)
    result = box_attack(trained_model, decode_codes, codes, lo, hi, label, cfg)
    v = result.variables
    assert v.shape == (n, 2, 6)
    assert (v >= lo[:, None]).all() and (v <= hi[:, None]).all()
    with torch.no_grad():
        pred = trained_model(decode(glyphs, font.repeat_interleave(2), label.repeat_interleave(2), v.flatten(0, 1)))
    assert torch.equal(pred.argmax(1).view(n, 2), result.pred)
    assert result.success.any()


@pytest.mark.parametrize("eps", [EPS_MID, 0.05])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_at_least_as_strong_as_torchattacks(trained_model, attack_set, optimizer, eps):
    torchattacks = pytest.importorskip("torchattacks")
    x, y, index = attack_set
    restarts = 3
    model = trained_model.eval()
    torch.manual_seed(0)
    reference = torchattacks.PGD(model, eps=eps, alpha=0.01, steps=40, random_start=True)
    fooled = torch.zeros(len(y), dtype=torch.bool)
    for _ in range(restarts):
        adv = reference(x, y)
        assert (adv - x).abs().max() <= eps + 1e-6
        with torch.no_grad():
            fooled |= model(adv).argmax(1) != y
    correct = predict(model, x) == y
    theirs = float(fooled[correct].float().mean())
    assert 0.05 < theirs < 0.95, f"pick eps so that the reference rate is intermediate (got {theirs})"
    ours = pgd(model, x, y, config(eps=eps, steps=40, step_size=0.01, restarts=restarts, optimizer=optimizer),
               indices=index)
    assert torch.equal(ours.correct, correct)
    assert success_rates(ours.success, ours.correct)["success_any"] >= theirs


def test_success_rates_definitions():
    success = torch.tensor([[True, False], [False, False], [True, True], [True, True]])
    correct = torch.tensor([True, True, True, False])
    rates = success_rates(success, correct)
    assert rates["success"] == pytest.approx(3 / 6)
    assert rates["success_any"] == pytest.approx(2 / 3)
    assert rates["robust_accuracy"] == pytest.approx(1 / 4)
    assert rates["n_attacked"] == 4 and rates["n_correct"] == 3
    nothing_correct = success_rates(success, torch.zeros(4, dtype=torch.bool))
    assert nothing_correct["success"] != nothing_correct["success"]  # NaN
    assert nothing_correct["robust_accuracy"] == 0.0


def test_success_rates_read_zero_one_integers_as_booleans():
    success = [[1, 0], [0, 0], [1, 1], [1, 1]]
    correct = [1, 1, 1, 0]
    as_bool = success_rates(np.array(success, dtype=bool), np.array(correct, dtype=bool))
    assert success_rates(np.array(success), np.array(correct)) == as_bool
    assert success_rates(torch.tensor(success), torch.tensor(correct)) == as_bool


def test_success_rates_of_no_examples_are_undefined():
    rates = success_rates(np.zeros((0, 2), dtype=bool), np.zeros(0, dtype=bool))
    assert all(np.isnan(rates[key]) for key in ("success", "success_any", "robust_accuracy"))
    assert rates["n_attacked"] == 0 and rates["n_correct"] == 0


@pytest.mark.parametrize("start", STARTS)
@pytest.mark.parametrize("early_stop", [True, False])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_attack_state_follows_the_inputs_device_not_the_default_device(trained_model, attack_set, optimizer,
                                                                      early_stop, start):
    """What the attack allocates lives on its inputs' device (what the CUDA path relies on). With the default
    device set to `meta`, which holds no data, any tensor created without a device breaks the attack."""
    x, y, index = attack_set[0][:20], attack_set[1][:20], attack_set[2][:20]
    cfg = config(optimizer=optimizer, early_stop=early_stop, steps=5, start=start)
    reference = pgd(trained_model, x, y, cfg, indices=index)
    with torch.device("meta"):
        elsewhere = pgd(trained_model, x, y, cfg, indices=index)
    assert_same_result(elsewhere, reference)
    assert elsewhere.variables.device.type == "cpu"


def test_pgd_adversary_gives_the_first_restart_of_pgd_at_the_given_positions(trained_model, attack_set):
    """Adversarial training's examples: PGD's first restart, its starts keyed by the training positions."""
    x, y, _ = attack_set
    pos = torch.tensor([7, 3, 120, 41])
    cfg = config(steps=5)
    adversarial = pgd_adversary(x)(trained_model, pos, y[pos], cfg)
    expected = pgd(trained_model, x[pos], y[pos], cfg, indices=pos).variables[:, 0]
    assert torch.equal(adversarial, expected)
    # The starts follow the positions: the same images under other positions start elsewhere.
    assert not torch.equal(adversarial, pgd(trained_model, x[pos], y[pos], cfg).variables[:, 0])


def hand_result(success, loss):
    success, loss = torch.tensor(success), torch.tensor(loss, dtype=torch.float32)
    n, r = success.shape
    return AttackResult(labels=torch.zeros(n, dtype=torch.long), clean_pred=torch.zeros(n, dtype=torch.long),
                        variables=torch.arange(n * r, dtype=torch.float32).view(n, r, 1), success=success,
                        loss=loss, pred=success.long(), steps_to_success=torch.where(success, 1, -1))


def test_best_restart_prefers_success_then_loss():
    result = hand_result([[False, True, False], [False, False, False], [False, False, True]],
                         [[9.0, 0.5, 3.0], [0.1, 2.0, float("nan")], [float("inf"), 1.0, 0.2]])
    assert result.best_restart().tolist() == [1, 1, 2]
    assert result.best_variables().flatten().tolist() == [1.0, 4.0, 8.0]


def test_best_restart_picks_highest_loss_among_successful():
    result = hand_result([[True, True, False]], [[0.5, 4.0, 9.0]])
    assert result.best_restart().tolist() == [1]


@pytest.mark.parametrize("bad", [{"optimizer": "lbfgs"}, {"layout": "diagonal"}, {"eps": -0.1}, {"steps": -1},
                                 {"restarts": 0}, {"batch_size": 0}])
def test_attack_config_validation(bad):
    with pytest.raises(ValueError, match="must be one of|need eps >= 0"):
        AttackConfig(**bad)


def test_training_config_variant():
    cfg = AttackConfig(eps=0.2, steps=7, restarts=5, early_stop=True, optimizer="adam", seed=3)
    train_cfg = training_config(cfg)
    assert train_cfg.restarts == 1 and train_cfg.early_stop is False
    assert (train_cfg.eps, train_cfg.steps, train_cfg.optimizer, train_cfg.seed) == (0.2, 7, "adam", 3)


class Toy3(torch.nn.Module):
    """Three logits of a scalar variable v, quadratic in v, so that the loss along v is not convex: at v = 0 the
    true class 0 wins (logits 1, 0.9, 0.9; loss 1.03) and the loss rises with v; at v = 1 class 1 wins (logits
    1, 1.1, -10) with a lower loss (0.74). One signed step of 1.0 goes from the first point to the second."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        v = v.reshape(len(v), 1).double()
        return torch.cat([torch.ones_like(v), 0.9 + v - 0.8 * v ** 2, 0.9 + v - 11.9 * v ** 2], dim=1)


def toy_attack(early_stop: bool, steps: int = 1) -> AttackResult:
    center = torch.zeros(1, 1, dtype=torch.float64)
    cfg = AttackConfig(eps=0.0, steps=steps, step_size=1.0, restarts=1, early_stop=early_stop)
    return box_attack(Toy3(), lambda v, rows: v, center, center - 2, center + 2, torch.zeros(1, dtype=torch.long),
                      cfg)


def test_toy_model_has_a_misclassified_iterate_with_a_lower_loss():
    logits = Toy3()(torch.tensor([[0.0], [1.0]]))
    losses = F.cross_entropy(logits, torch.zeros(2, dtype=torch.long), reduction="none")
    assert logits.argmax(1).tolist() == [0, 1] and losses[1] < losses[0]


def test_early_stop_keeps_the_first_misclassified_iterate_even_at_a_lower_loss():
    result = toy_attack(early_stop=True)
    assert result.steps_to_success.tolist() == [[1]]
    assert result.success.tolist() == [[True]] and result.pred.tolist() == [[1]]
    assert result.variables[0, 0].item() == 1.0
    # Success and the first iterate that fools the model are one and the same event.
    assert torch.equal(result.success, result.steps_to_success >= 0)


def test_without_early_stop_the_lower_loss_misclassified_iterate_is_not_kept():
    result = toy_attack(early_stop=False)  # adversarial training's rule: the highest-loss iterate, hit or not
    assert result.variables[0, 0].item() == 0.0 and result.success.tolist() == [[False]]
    assert result.loss[0, 0].item() == pytest.approx(F.cross_entropy(Toy3()(torch.zeros(1, 1)),
                                                                     torch.zeros(1, dtype=torch.long)).item())
    assert result.steps_to_success.tolist() == [[1]]  # the iterate at step 1 did fool the model


@pytest.mark.parametrize("early_stop", [True, False])
def test_steps_to_success_is_the_first_fooling_iterate(early_stop):
    """A model that misclassifies everything is fooled at step 0, however many iterates follow."""

    class Wrong(torch.nn.Module):
        def forward(self, v):
            return torch.cat([v.reshape(len(v), 1) * 0.0, torch.ones(len(v), 1, dtype=v.dtype) + v], dim=1)

    center = torch.zeros(3, 1, dtype=torch.float64)
    cfg = AttackConfig(eps=0.1, steps=4, step_size=0.05, restarts=2, early_stop=early_stop)
    result = box_attack(Wrong(), lambda v, rows: v, center, center - 1, center + 1, torch.zeros(3, dtype=torch.long),
                        cfg)
    assert (result.steps_to_success == 0).all() and result.success.all()


def test_adam_step_rule_equals_torch_adam_on_the_perturbation(double_model, attack_set):
    """The adam step rule is torch.optim.Adam (maximizing the loss) on the variable, iterate by iterate: with no
    early stop and a box too wide to bind, the kept variable is the reference trajectory's highest-loss iterate."""
    x, y, _ = attack_set
    images, labels = x[:4].double(), y[:4]
    cfg = AttackConfig(eps=0.0, steps=6, optimizer="adam", adam_lr=0.02, restarts=1, early_stop=False)
    lo, hi = images - 100.0, images + 100.0
    result = box_attack(double_model, lambda v, rows: v, images, lo, hi, labels, cfg, clean_images=images)
    v = images.clone().requires_grad_(True)
    reference = torch.optim.Adam([v], lr=cfg.adam_lr, eps=1e-8, maximize=True)
    iterates, losses = [], []
    for t in range(cfg.steps + 1):
        loss = F.cross_entropy(double_model(v), labels, reduction="none")
        iterates.append(v.detach().clone())
        losses.append(loss.detach())
        if t < cfg.steps:
            reference.zero_grad()
            loss.sum().backward()
            reference.step()
    best = torch.stack(losses).argmax(0)  # (n,)
    expected = torch.stack(iterates)[best, torch.arange(len(labels))]
    assert torch.allclose(result.variables[:, 0], expected, rtol=0, atol=1e-9)
    assert torch.allclose(result.loss[:, 0].double(), torch.stack(losses).max(0).values, rtol=1e-6)
    assert (best > 1).all()  # the comparison reaches past the first Adam steps


class StraightThroughFloor(torch.autograd.Function):
    """floor(x) forward, identity backward: a loss that stays flat while its gradient keeps moving the iterate."""

    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class FlatLoss(torch.nn.Module):
    def forward(self, v):
        z = StraightThroughFloor.apply(v[:, :1])
        return torch.cat([z, -z], dim=1)  # class 0 has the higher logit while floor(v) > 0


@pytest.mark.parametrize("early_stop", [True, False])
def test_of_equal_loss_iterates_the_first_is_kept(early_stop):
    """Loss is constant on the box [1, 1.5] while the gradient moves v (1.25, 1.15, 1.05, 1.0): the start (the
    first iterate) is kept."""
    center = torch.full((1, 1), 1.25, dtype=torch.float64)
    cfg = AttackConfig(eps=0.0, steps=3, step_size=0.1, restarts=1, early_stop=early_stop)
    result = box_attack(FlatLoss(), lambda v, rows: v, center, center - 0.25, center + 0.25,
                        torch.zeros(1, dtype=torch.long), cfg)
    assert result.success.tolist() == [[False]]
    assert result.variables[0, 0].item() == 1.25


class TopHalf(torch.nn.Module):
    """A classifier that sees only the top 14 rows of the image."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        mask = torch.zeros_like(x)
        mask[:, :, :14] = 1
        return self.model(x * mask)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_pixels_the_model_ignores_stay_at_their_start(trained_model, attack_set, optimizer):
    """Where the gradient is zero, neither step rule moves the iterate: those pixels keep their random start."""
    x, y, index = attack_set[0][:10], attack_set[1][:10], attack_set[2][:10]
    cfg = config(optimizer=optimizer, steps=5, restarts=1, early_stop=False)
    # eval() first: the attack restores the wrapper's mode, and with it that of the shared model inside.
    result = pgd(TopHalf(trained_model).eval(), x, y, cfg, indices=index)
    start = (x + cfg.eps * restart_noise(index, 0, tuple(x.shape[1:]), cfg.seed, cfg.start)).clamp(0, 1)
    assert torch.equal(result.variables[:, 0, :, 14:], start[:, :, 14:])
    assert not torch.equal(result.variables[:, 0, :, :14], start[:, :, :14])  # the seen half did move


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_with_early_stop_more_steps_leave_finished_examples_as_they_were(double_model, attack_set, optimizer):
    """An early-stopped trajectory ends at its first fooling iterate, so a longer attack keeps it unchanged."""
    x, y, index = attack_set[0].double(), attack_set[1], attack_set[2]
    short = pgd(double_model, x, y, config(optimizer=optimizer, steps=8), indices=index)
    long = pgd(double_model, x, y, config(optimizer=optimizer, steps=20), indices=index)
    done = short.success
    assert done.sum() >= 5
    assert torch.equal(long.variables[done], short.variables[done])
    assert torch.equal(long.steps_to_success[done], short.steps_to_success[done])
    assert torch.equal(long.loss[done], short.loss[done]) and torch.equal(long.pred[done], short.pred[done])


def test_clean_prediction_is_taken_on_the_clean_images_when_given(trained_model, attack_set):
    """On-manifold attacks predict on the real images, not on the decoded center; here the two differ."""
    x, y, _ = attack_set[0][:30], attack_set[1][:30], None
    blank = torch.zeros_like(x)
    cfg = config(steps=1)
    given = box_attack(trained_model, lambda v, rows: v, blank, blank, blank + 0.1, y, cfg, clean_images=x)
    assert torch.equal(given.clean_pred, predict(trained_model, x))
    assert not torch.equal(given.clean_pred, predict(trained_model, blank))


def test_box_attack_state_follows_the_inputs_device_without_indices(trained_model, fonts_data, glyph_bank):
    """As the PGD test above, for a decoder that indexes by row and default identities (indices=None)."""
    decode_codes, codes, lo, hi, label, _, _ = codes_problem(fonts_data, glyph_bank, 12)

    cfg = config(eps=1.0, steps=3, step_size=0.02, restarts=2)
    reference = box_attack(trained_model, decode_codes, codes, lo, hi, label, cfg)
    with torch.device("meta"):
        elsewhere = box_attack(trained_model, decode_codes, codes, lo, hi, label, cfg)
    assert_same_result(elsewhere, reference)


def test_restart_noise_names_an_unknown_start():
    with pytest.raises(ValueError, match=r"start must be one of \('uniform', 'distance_direction'\), got 'gauss'"):
        restart_noise(torch.arange(3), 0, (3,), 0, "gauss")


@pytest.mark.parametrize("start", STARTS)
def test_restart_noise_is_the_documented_keyed_draw(start):
    """The documented keying, so that records stay reproducible: the counter-based generator of `keyed`, keyed
    by (seed, example index, restart, start rule); the distance_direction radius comes after the Gaussian's words."""
    indices = torch.tensor([0, 5, 123456])
    noise = restart_noise(indices, 2, (3, 4), seed=11, start=start)
    lanes = keyed.keys([11, indices, 2, STARTS.index(start)], "cpu")
    if start == "uniform":
        expected = keyed.uniform(lanes, 12) * 2 - 1
    else:
        g = keyed.normal(lanes, 12)
        expected = g / g.abs().amax(dim=1, keepdim=True) * keyed.uniform(lanes, 1, first=12)
    assert torch.equal(noise, expected.view(3, 3, 4))


class Linear2(torch.nn.Module):
    """Two logits (0, v . 1): the loss of class 0 grows with every coordinate of v, so each signed step is +1."""

    def forward(self, v):
        return torch.cat([torch.zeros(len(v), 1, dtype=v.dtype), v.sum(dim=1, keepdim=True)], dim=1)


@pytest.mark.parametrize("relative, steps, expected", [
    (True, 1, [0.04, 0.2, 0.8]),  # 0.4 of each half-width
    (True, 3, [0.1, 0.5, 2.0]),  # 1.2 half-widths, clipped to the box
    (False, 1, [0.1, 0.4, 0.4]),  # 0.4 in the variable's units, clipped where the box is narrower
])
def test_relative_steps_are_in_units_of_each_coordinates_half_width(relative, steps, expected):
    half = torch.tensor([[0.1, 0.5, 2.0]], dtype=torch.float64)
    center = torch.zeros_like(half)
    cfg = AttackConfig(eps=0.0, steps=steps, step_size=0.4, restarts=1, early_stop=False, relative_step=relative)
    result = box_attack(Linear2(), lambda v, rows: v, center, -half, half, torch.zeros(1, dtype=torch.long), cfg)
    assert result.variables[0, 0].tolist() == pytest.approx(expected)


def test_a_relative_step_below_two_never_crosses_the_box_in_one_step():
    """From the lower bound, one relative step of 1.5 half-widths stops inside the box, short of its upper bound."""
    half = torch.tensor([[0.15, 0.2, 0.3]], dtype=torch.float64)
    cfg = AttackConfig(eps=0.0, steps=1, step_size=1.5, restarts=1, early_stop=False, relative_step=True)
    result = box_attack(Linear2(), lambda v, rows: v, -half, -half, half, torch.zeros(1, dtype=torch.long), cfg)
    assert result.variables[0, 0].tolist() == pytest.approx((0.5 * half[0]).tolist())

"""The stacked engine: M seeds of a setting trained in lock step give each model what training it alone gives.

Equivalence is checked in float64 on the CPU. Tolerance: parameters and batch-norm statistics within 1e-8
(absolute) of the model trained alone, epoch losses within 1e-10 (relative), predictions identical. What differs
is the order of floating-point sums inside the grouped kernels; measured differences (both layouts, normal and
adversarial training, 2 epochs) are at most 2e-12 relative for losses and 5e-11 for parameters (Adam divides by
the root of small second moments, which enlarges them).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from manifold_robustness import stages
from manifold_robustness.attacks import AttackConfig, pgd, pgd_adversary
from manifold_robustness.data import write_dataset
from manifold_robustness.models import build_classifier, load_classifier
from manifold_robustness.device import Adam
from manifold_robustness.onmanifold import ClassDecoders, latent_box, learned_manifold_adversary
from manifold_robustness.stacked import (LAYOUTS, GroupedClassifier, StackedClassifier, check_settings,
                                         resolve_engine, runs, train_stacked)
from manifold_robustness.training import TrainConfig, predict, train_classifier
from manifold_robustness.vaegan import VAEGAN, VAEGANConfig

PARAM_ATOL = 1e-8
LOSS_RTOL = 1e-10
SEEDS = (3, 0, 7)  # unsorted: a model's place in the stack must not matter


@pytest.fixture
def float64():
    """Build models and compute in float64 for the duration of a test."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.fixture(scope="module")
def small_train(train_tensors):
    """120 training images (float64) with their positions and labels."""
    images, labels = train_tensors
    rows = torch.randperm(len(labels), generator=torch.Generator().manual_seed(2))[:120]
    return images[rows].double(), labels[rows].clone()


def configs(mode: str, **kw) -> list[TrainConfig]:
    attack = AttackConfig(eps=0.3, steps=3, step_size=0.1, start="distance_direction")
    return [TrainConfig(**{"mode": mode, "epochs": 2, "batch_size": 40, "seed": s, "attack": attack, **kw})
            for s in SEEDS]


def assert_same_training(stacked, alone) -> None:
    """Stacked (models, histories) against one (model, history) per seed trained alone."""
    (models, histories), (solo_models, solo_histories) = stacked, alone
    for model, solo in zip(models, solo_models):
        state, solo_state = model.state_dict(), solo.state_dict()
        assert state.keys() == solo_state.keys()
        for key, value in state.items():
            if value.is_floating_point():
                torch.testing.assert_close(value, solo_state[key], atol=PARAM_ATOL, rtol=0, msg=key)
            else:
                assert torch.equal(value, solo_state[key]), key  # batches seen by batch norm
        assert not model.training
    for history, solo in zip(histories, solo_histories):
        assert [h["epoch"] for h in history] == [h["epoch"] for h in solo]
        assert [h["lr"] for h in history] == [h["lr"] for h in solo]
        assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in solo], rel=LOSS_RTOL)


def small_decoders() -> ClassDecoders:
    """Ten small untrained VAE-GANs with distinct weights: what is tested is the path through each class's
    decoder."""
    vaegans = []
    for c in range(10):
        torch.manual_seed(c)
        vaegans.append(VAEGAN(VAEGANConfig(channels=(8, 16, 32), seed=c)).eval())
    return ClassDecoders(vaegans)


def train_alone(images, labels, cfgs, adversary=None):
    pairs = [train_classifier(images, labels, c, progress=False, adversary=adversary) for c in cfgs]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mode", ["normal", "adversarial"])
def test_stacked_training_equals_each_seed_trained_alone(float64, small_train, mode, layout):
    images, labels = small_train
    cfgs = configs(mode)
    stacked = train_stacked(images, labels, cfgs, progress=False, layout=layout)
    alone = train_alone(images, labels, cfgs)
    assert_same_training(stacked, alone)
    # Different seeds really are different models: the check above could not pass by comparing one to itself.
    a, b = stacked[0][0].state_dict(), stacked[0][1].state_dict()
    assert not torch.allclose(a["fc2.weight"], b["fc2.weight"])
    x = images[:60]
    for model, solo in zip(*[s[0] for s in (stacked, alone)]):
        assert torch.equal(predict(model, x), predict(solo, x))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_stacked_learned_manifold_training_equals_each_seed_trained_alone(float64, small_train, layout):
    """A mode that goes through a decoder: on-manifold training on VAE-GAN latents (small untrained VAE-GANs
    with distinct weights: the attack's path through each class's decoder is what is tested)."""
    images, labels = small_train
    decoders = small_decoders()
    latents = decoders.encode_mean(images, labels)
    adversary = learned_manifold_adversary(decoders, latents)
    cfgs = configs("onmanifold_learned", adversarial_fraction=0.4)
    assert_same_training(train_stacked(images, labels, cfgs, progress=False, adversary=adversary, layout=layout),
                         train_alone(images, labels, cfgs, adversary))


def test_an_uneven_last_batch_and_a_fully_clean_fraction(float64, small_train):
    """110 images in batches of 40 leave a last batch of 30; a fraction of 0 keeps every batch clean."""
    images, labels = small_train[0][:110], small_train[1][:110]
    for cfgs in (configs("adversarial"), configs("adversarial", adversarial_fraction=0.0)):
        assert_same_training(train_stacked(images, labels, cfgs, progress=False),
                             train_alone(images, labels, cfgs))


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mode", ["normal", "adversarial"])
def test_models_of_different_n_in_one_lock_step_equal_each_trained_alone(float64, small_train, mode, layout):
    """N = 40, 110 and 120 (seeds 3, 0, 7) and a second model at N = 110 (seed 3), batches of 40: each model
    trains on its own first N images, in its own epochs (the N = 40 model is in its second epoch at the
    second step, at another learning rate and attack seed) and stops after its own steps (2 against 6); at
    every epoch's third step the N = 110 models take batches of 30 beside the N = 120 model's 40."""
    images, labels = small_train
    cfgs = configs(mode) + configs(mode)[:1]
    ns = [40, 110, 120, 110]
    stacked = train_stacked(images, labels, cfgs, progress=False, layout=layout, n_train=ns)
    alone = [train_classifier(images[:n], labels[:n], c, progress=False) for c, n in zip(cfgs, ns)]
    assert_same_training(stacked, ([a[0] for a in alone], [a[1] for a in alone]))
    assert [len(h) for h in stacked[1]] == [2] * 4
    # Same seed, other N: another model.
    assert not torch.allclose(stacked[0][0].state_dict()["fc2.weight"], stacked[0][3].state_dict()["fc2.weight"])


def test_learned_manifold_models_of_different_n_keep_their_own_latent_box(float64, small_train):
    """With the data-range box, a model's latent box is that of its own N training latents: stacked with a
    model of another N, each is attacked in its own box, as when trained alone."""
    images, labels = small_train
    decoders = small_decoders()
    latents = decoders.encode_mean(images, labels)

    def box(n):
        return latent_box(latents[:n], labels[:n], "data_range", decoders.bound)

    assert not torch.equal(box(60)[0], box(120)[0][:60])  # the two N really have different boxes
    cfgs = configs("onmanifold_learned")[:2]
    ns = [60, 120]  # batches of 40: the N = 60 model's second batch (20) is attacked in a run of its own
    stacked = train_stacked(images, labels, cfgs, progress=False, n_train=ns,
                            adversary=learned_manifold_adversary(decoders, latents, box))
    alone = [train_classifier(images[:n], labels[:n], c, progress=False,
                              adversary=learned_manifold_adversary(decoders, latents[:n], box(n)))
             for c, n in zip(cfgs, ns)]
    assert_same_training(stacked, ([a[0] for a in alone], [a[1] for a in alone]))
    # The box of the largest N for both would train the N = 60 model otherwise.
    wrong = train_classifier(images[:60], labels[:60], cfgs[0], progress=False,
                             adversary=learned_manifold_adversary(decoders, latents, box(120)))
    assert not torch.allclose(wrong[0].state_dict()["fc2.weight"], stacked[0][0].state_dict()["fc2.weight"],
                              atol=PARAM_ATOL, rtol=0)


def test_adam_steps_only_the_given_rows_each_at_its_rate(float64):
    """Rows 0-1 at lr 0.1 and row 2 at 0.01 step as fused Adam on those rows alone; row 3 keeps its value and
    state."""
    torch.manual_seed(0)
    start, grads = torch.randn(4, 5), [torch.randn(4, 5) for _ in range(3)]
    p = torch.nn.Parameter(start.clone())
    opt = Adam([p], lr=1.0, weight_decay=1e-4)
    rates = [(slice(0, 2), 0.1), (slice(2, 3), 0.01)]
    alone = [torch.nn.Parameter(start[rows].clone()) for rows, _ in rates]
    solo = [torch.optim.Adam([q], lr=lr, weight_decay=1e-4, fused=True) for q, (_, lr) in zip(alone, rates)]
    for g in grads:
        p.grad = g.clone()
        opt.step_rows(rates)
        for q, opt_q, (rows, _) in zip(alone, solo, rates):
            q.grad = g[rows].clone()
            opt_q.step()
    for q, (rows, _) in zip(alone, rates):
        torch.testing.assert_close(p.detach()[rows], q.detach(), atol=1e-14, rtol=0)
    assert torch.equal(p.detach()[3], start[3]) and not opt.exp_avg[0][3].any()
    assert float(opt.steps[0]) == 3


def test_runs_are_maximal_slices_of_equal_values():
    assert runs([40, 40, 30, 40]) == [slice(0, 2), slice(2, 3), slice(3, 4)]
    assert runs([1]) == [slice(0, 1)] and runs([]) == []


@pytest.mark.parametrize("layout", [GroupedClassifier, StackedClassifier])
def test_stacked_forward_is_each_model_on_its_own_rows(float64, small_train, layout):
    models = []
    for s in SEEDS:
        torch.manual_seed(s)
        models.append(build_classifier())
    stacked = layout(models)
    x = small_train[0][:30]
    with torch.no_grad():
        stacked.eval()
        out = stacked(x)  # flat: 10 rows per model, model after model
        for m, model in enumerate(models):
            torch.testing.assert_close(out[10 * m:10 * (m + 1)], model.eval()(x[10 * m:10 * (m + 1)]), atol=1e-12,
                                       rtol=0)
    with pytest.raises(ValueError, match="cannot be split evenly among 3 models"):
        stacked(x[:29])
    with pytest.raises(ValueError, match="expected inputs for 3 models"):
        stacked.forward_stacked(x[:20].reshape(2, 10, 1, 28, 28))
    # train() and eval() reach the batch norms: in train mode outputs depend on the batch, and statistics move.
    before = stacked.state_dict()["features__2__running_mean"].clone()
    stacked.train()
    with torch.no_grad():
        train_out = stacked(x)
    assert stacked.training and not torch.allclose(train_out, out)
    moved = stacked.state_dict()["features__2__running_mean"]
    assert not torch.equal(moved[0], before[0]) and not torch.equal(moved[2], before[2])
    unstacked = stacked.unstack()
    assert all(not m.training for m in unstacked)
    assert torch.equal(unstacked[1].features[2].running_mean, moved[1])
    # A training forward of each model alone on its 10 rows moves its statistics, and counts its batches, the
    # same way (the models themselves were only evaluated so far, which leaves them as they were).
    for m, (model, solo) in enumerate(zip(unstacked, models)):
        with torch.no_grad():
            solo.train()(x[10 * m:10 * (m + 1)])
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, solo.state_dict()[key], atol=1e-12, rtol=0, msg=key)


def test_stacked_parameters_are_the_stacks_of_the_models(float64):
    models = [build_classifier() for _ in range(2)]
    stacked = GroupedClassifier(models)
    params = dict(stacked.named_parameters())
    assert set(params) == {n.replace(".", "__") for n, _ in models[0].named_parameters()}
    assert torch.equal(params["fc1__weight"][1], models[1].fc1.weight)
    assert params["fc1__weight"].requires_grad
    assert torch.equal(stacked.stacked("features.2.running_var")[0], models[0].features[2].running_var)
    with pytest.raises(ValueError, match="at least one model"):
        GroupedClassifier([])
    with pytest.raises(ValueError, match="stacked layout must be one of"):
        train_stacked(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), [TrainConfig()], layout="loop")


def test_one_attack_on_stacked_models_is_each_models_attack_with_its_seed(float64, small_train):
    """PGD on the flat batch of 3 stacked models, seeds given per model, equals PGD on each model alone with
    its seed: starts, iterates and results (float64, so that no gradient's sign hangs on rounding)."""
    images, labels = small_train[0][:24], small_train[1][:24]
    models = []
    for s in SEEDS:
        torch.manual_seed(s)
        models.append(build_classifier().eval())
    stacked = GroupedClassifier(models)
    pos = torch.arange(24)
    cfg = AttackConfig(eps=0.3, steps=4, step_size=0.05, restarts=1, early_stop=False, start="distance_direction")
    together = pgd(stacked, images, labels, AttackConfig(**{**cfg.__dict__, "seed": SEEDS}), indices=pos % 8)
    for m, (model, seed) in enumerate(zip(models, SEEDS)):
        rows = slice(8 * m, 8 * (m + 1))
        alone = pgd(model, images[rows], labels[rows], AttackConfig(**{**cfg.__dict__, "seed": seed}),
                    indices=pos[rows] % 8)
        torch.testing.assert_close(together.variables[rows], alone.variables, atol=1e-12, rtol=0)
        assert torch.equal(together.success[rows], alone.success)
    assert not stacked.training


def test_models_trained_together_must_differ_only_in_their_seed():
    with pytest.raises(ValueError, match="differ only in their seed"):
        check_settings([TrainConfig(seed=0), TrainConfig(seed=1, epochs=3)])
    with pytest.raises(ValueError, match="a seed of its own"):
        check_settings([TrainConfig(seed=1), TrainConfig(seed=1)])
    with pytest.raises(ValueError, match="no models to train"):
        check_settings([])
    check_settings([TrainConfig(seed=0), TrainConfig(seed=4)])


def test_engine_by_device():
    assert resolve_engine("auto", torch.device("cpu")) == "sequential"
    assert resolve_engine("auto", torch.device("cuda")) == "stacked"
    assert resolve_engine("stacked", torch.device("cpu")) == "stacked"
    assert resolve_engine("sequential", torch.device("cuda")) == "sequential"
    with pytest.raises(ValueError, match="classifiers.engine must be one of"):
        resolve_engine("grouped", torch.device("cpu"))


def test_the_stage_writes_each_seeds_files_with_either_engine(tmp_path, fonts_data, glyph_bank):
    """A setting job's stage with the stacked engine (float32, as the workflow runs it) writes one model and
    metrics file per seed, and records how it trained. In float32 the two engines run different kernels
    (channels-last convolutions alone, grouped ones stacked), and the first steps of Adam at lr 0.01 on 200
    images enlarge rounding differences (losses differ by 0.3% after two epochs): the two are compared
    loosely here, exactly in float64 above."""
    data = tmp_path / "fonts.h5"
    write_dataset(data, fonts_data, glyph_bank[0], [str(p) for p in glyph_bank[1]])
    cfg = {"epochs": 2, "batch_size": 50, "lr": 0.01, "lr_decay": 0.95, "weight_decay": 1e-4, "subset_seed": 0,
           "adversarial_fraction": 0.5}
    out = {}
    for engine in ("stacked", "sequential"):
        models = [tmp_path / engine / f"seed{s}" / "model.pt" for s in (1, 0)]
        metrics = [p.with_name("metrics.json") for p in models]
        out[engine] = stages.train_setting(str(data), models, metrics, "fonts", "normal", 200,
                                           stages.seeds_of(models), {**cfg, "engine": engine}, "cpu", 1)
        assert [json.loads(p.read_text())["seed"] for p in metrics] == [1, 0]
    stacked, sequential = out["stacked"], out["sequential"]
    assert [m["engine"] for m in stacked] == ["stacked"] * 2 and stacked[0]["trained_with_seeds"] == [1, 0]
    assert [m["engine"] for m in sequential] == ["sequential"] * 2 and sequential[1]["trained_with_seeds"] == [0]
    for a, b in zip(stacked, sequential):
        assert [h["loss"] for h in a["history"]] == pytest.approx([h["loss"] for h in b["history"]], rel=0.02)
        assert abs(a["test_error"] - b["test_error"]) <= 0.05
    for s in (1, 0):
        x = torch.from_numpy(fonts_data["test"]["images"][:100])
        a = load_classifier(tmp_path / "stacked" / f"seed{s}" / "model.pt")
        b = load_classifier(tmp_path / "sequential" / f"seed{s}" / "model.pt")
        assert float((predict(a, x) == predict(b, x)).float().mean()) >= 0.9
    with pytest.raises(ValueError, match="one model and one metrics path per seed"):
        stages.train_setting(str(data), models[:1], metrics, "fonts", "normal", 200, [1, 0],
                             {**cfg, "engine": "stacked"}, "cpu", 1)


@pytest.mark.parametrize("engine", ["sequential", "stacked"])
def test_a_job_of_several_n_tells_the_adversary_each_models_n(tmp_path, fonts_data, glyph_bank, monkeypatch, engine):
    """With one N per model (lock_step: all_n), the adversary learns the N of the model it attacks, with either
    engine: its examples may depend on the training set (the learned manifold's data-range box)."""
    data = tmp_path / "fonts.h5"
    write_dataset(data, fonts_data, glyph_bank[0], [str(p) for p in glyph_bank[1]])
    seen = []

    def recording(images):
        inner = pgd_adversary(images)

        def attack(model, pos, y, cfg, blocks=None):
            seen.append((len(pos), blocks))
            return inner(model, pos, y, cfg)
        return attack

    monkeypatch.setattr(stages, "training_adversary", lambda mode, path, train, images, *rest: recording(images))
    cfg = {"epochs": 1, "batch_size": 100, "lr": 0.01, "lr_decay": 0.95, "weight_decay": 1e-4, "subset_seed": 0,
           "adversarial_fraction": 0.5, "engine": engine,
           "adversarial_attack": {"eps": 0.3, "steps": 1, "step_size": 0.1, "optimizer": "sign", "adam_lr": 0.005,
                                  "start": "uniform", "restarts": 1}}
    models = [tmp_path / engine / f"N{n}" / "seed0" / "model.pt" for n in (100, 200)]
    metrics = [p.with_name("metrics.json") for p in models]
    out = stages.train_setting(str(data), models, metrics, "fonts", "adversarial", stages.n_train_of(models),
                               stages.seeds_of(models), cfg, "cpu", 1)
    assert [m["n_train"] for m in out] == [100, 200]
    if engine == "sequential":
        assert seen == [(50, (100,)), (50, (200,)), (50, (200,))]
    else:  # the N = 200 model first (more steps): both at step 0, then it alone
        assert seen == [(100, (200, 100)), (50, (200,))]


def test_seeds_are_read_from_the_seed_folders():
    assert stages.seeds_of(["r/fonts/normal/N500/seed3/model.pt", "r/seed12/metrics.json"]) == [3, 12]
    with pytest.raises(ValueError, match="not in a seed folder"):
        stages.seeds_of(["r/fonts/normal/N500/model.pt"])
    with pytest.raises(ValueError, match="not in a seed folder"):
        stages.seeds_of(["r/seed3x/model.pt"])


def test_adversary_of_pgd_runs_the_stack(small_train):
    """The training adversary of PGD takes the stacked model as it takes one: a flat batch in, images out."""
    images, labels = small_train[0][:20].float(), small_train[1][:20]
    models = [copy.deepcopy(build_classifier()).eval() for _ in range(2)]
    attack = pgd_adversary(images)(GroupedClassifier(models), torch.arange(20), labels,
                                   AttackConfig(steps=2, restarts=1, early_stop=False, seed=(0, 1)))
    assert attack.shape == images.shape
    assert (attack - images).abs().max() <= 0.3 + 1e-6 and attack.min() >= 0 and attack.max() <= 1

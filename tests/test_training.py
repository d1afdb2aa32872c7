"""Training (normal and adversarial), the attack record on disk, and the success rates the tables read from it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manifold_robustness.attack_io import class_keeping, load_success_rates, save_attack
from manifold_robustness.attacks import AttackConfig, AttackResult, pgd, pgd_adversary, success_rates
from manifold_robustness.data import write_dataset
from manifold_robustness.device import Adam, fast_layout
from manifold_robustness.tables import COLUMNS, metrics_row, metrics_table
from manifold_robustness.training import (
    TrainConfig,
    adversarial_batch,
    error_rate,
    learning_rate,
    predict,
    train_classifier,
)


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 50, "seed": 0, **kw})


@pytest.fixture(scope="module")
def tiny_train(train_tensors):
    """200 training images, a subset with every class."""
    images, labels = train_tensors
    index = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))[:200]
    return images[index].clone(), labels[index].clone()


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_same_seed_same_model(tiny_train):
    images, labels = tiny_train
    m1, h1 = train_classifier(images, labels, tiny_config(), progress=False)
    torch.manual_seed(123)  # global RNG state must not matter: the seed is in the config
    m2, h2 = train_classifier(images, labels, tiny_config(), progress=False)
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    assert_same_state(m1, m2)


def test_different_seeds_differ(tiny_train):
    images, labels = tiny_train
    m1, h1 = train_classifier(images, labels, tiny_config(seed=0), progress=False)
    m2, h2 = train_classifier(images, labels, tiny_config(seed=1), progress=False)
    assert h1[0]["loss"] != h2[0]["loss"]
    assert not torch.equal(m1.fc1.weight, m2.fc1.weight)


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=0.01, lr_decay=0.95)
    for epoch in (0, 1, 5, 19):
        assert learning_rate(epoch, cfg) == pytest.approx(0.01 * 0.95 ** epoch, rel=1e-12)
    assert learning_rate(0, cfg) == 0.01


def test_normal_training_lowers_loss_and_records_history(tiny_train):
    images, labels = tiny_train
    cfg = tiny_config(epochs=4)
    model, history = train_classifier(images, labels, cfg, progress=False)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert [h["lr"] for h in history] == [learning_rate(e, cfg) for e in range(4)]
    assert all(h["seconds"] >= 0 and np.isfinite(h["loss"]) for h in history)
    assert history[0]["loss"] > 2 * history[-1]["loss"]
    assert not model.training


def test_fixture_model_generalizes(trained_model, test_tensors):
    images, labels = test_tensors
    assert error_rate(trained_model, images, labels) < 0.2


def test_adversarial_training_runs(tiny_train):
    images, labels = tiny_train
    attack = AttackConfig(eps=0.1, steps=3, restarts=4)
    cfg = tiny_config(mode="adversarial", epochs=1, attack=attack)
    model, history = train_classifier(images[:100], labels[:100], cfg, progress=False)
    assert not model.training
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    normal, normal_history = train_classifier(images[:100], labels[:100], tiny_config(epochs=1), progress=False)
    assert history[0]["loss"] != normal_history[0]["loss"]  # the adversarial half of each batch changed the loss


def test_adversarial_batch_replaces_the_last_fraction(trained_model, tiny_train):
    images, labels = tiny_train
    x, y = images[:10], labels[:10]
    model = copy.deepcopy(trained_model).train()
    eps = 0.1
    cfg = tiny_config(mode="adversarial", attack=AttackConfig(eps=eps, steps=5, restarts=3))
    out = adversarial_batch(model, x, y, torch.arange(10), cfg, 0, pgd_adversary(x))
    assert model.training  # the attack restored the training mode
    assert out.shape == x.shape
    assert torch.equal(out[:5], x[:5])
    delta = (out[5:] - x[5:]).abs()
    assert delta.max() <= eps + 1e-6 and delta.flatten(1).max(1).values.min() > 0
    assert out.min() >= 0 and out.max() <= 1
    # A fresh epoch draws fresh random starts.
    again = adversarial_batch(model, x, y, torch.arange(10), cfg, 1, pgd_adversary(x))
    assert not torch.equal(again[5:], out[5:])
    # Nothing is replaced when the fraction is 0; everything when it is 1.
    assert adversarial_batch(model, x, y, torch.arange(10), tiny_config(adversarial_fraction=0.0), 0,
                             pgd_adversary(x)) is x
    full = adversarial_batch(model, x, y, torch.arange(10), tiny_config(adversarial_fraction=1.0), 0,
                             pgd_adversary(x))
    assert not torch.equal(full[:5], x[:5])


def test_train_config_validation():
    with pytest.raises(ValueError, match="training mode must be one of"):
        TrainConfig(mode="robust")
    with pytest.raises(ValueError, match="adversarial_fraction"):
        TrainConfig(adversarial_fraction=1.5)


def test_predict_restores_mode(trained_model, tiny_train):
    model = copy.deepcopy(trained_model).train()
    images, _ = tiny_train
    pred = predict(model, images, batch_size=64)
    assert model.training and pred.shape == (len(images),)
    assert torch.equal(pred, predict(trained_model, images))


# Success rates, the attack record and the metrics table.


def test_success_rates_hand_built():
    # 3 images x 2 restarts; image 2 is misclassified before the attack and does not count.
    success = np.array([[True, False], [False, False], [True, True]])
    correct = np.array([True, True, False])
    rates = success_rates(success, correct)
    assert rates["success"] == 0.25  # 1 of the 4 (image, restart) pairs of correct images
    assert rates["success_any"] == 0.5  # image 0 of images 0, 1
    assert rates["robust_accuracy"] == 1 / 3  # only image 1 is correct and survives
    assert rates["n_attacked"] == 3 and rates["n_correct"] == 2
    # Tensors work too.
    assert success_rates(torch.from_numpy(success), torch.from_numpy(correct)) == rates


def hand_result() -> AttackResult:
    success = torch.tensor([[True, False], [False, False], [True, True]])
    return AttackResult(
        labels=torch.tensor([1, 2, 3]), clean_pred=torch.tensor([1, 2, 0]),
        variables=torch.rand(3, 2, 1, 28, 28), success=success, loss=torch.tensor([[3.0, 1.0], [0.5, 0.7], [2.0, 2.5]]),
        pred=torch.tensor([[4, 1], [2, 2], [5, 6]]), steps_to_success=torch.tensor([[3, -1], [-1, -1], [0, 0]]))


def test_save_attack_then_load_success_rates(tmp_path):
    result = hand_result()
    path = tmp_path / "attacks" / "pgd.h5"
    cfg = AttackConfig(eps=0.3, restarts=2)
    rates = save_attack(path, result, np.array([10, 20, 30]), cfg, attrs={"model": "m.pt"})
    assert rates == success_rates(result.success, result.correct)
    assert load_success_rates(path) == rates
    with h5py.File(path, "r") as h5:
        assert h5["index"][()].tolist() == [10, 20, 30]
        assert h5["best_restart"][()].tolist() == [0, 1, 1]
        assert np.array_equal(h5["adversarial"][()], result.variables[[0, 1, 2], [0, 1, 1]].numpy())
        assert h5["success"][()].dtype == bool
        assert h5.attrs["config.eps"] == 0.3 and h5.attrs["config.restarts"] == 2
        assert h5.attrs["config.model"] == "m.pt"
        assert h5.attrs["rate.success_any"] == rates["success_any"]
    assert list(path.parent.iterdir()) == [path]


def test_save_attack_of_a_real_pgd_run(tmp_path, trained_model, attack_set):
    x, y, index = attack_set
    cfg = AttackConfig(eps=0.05, steps=10, restarts=2)
    result = pgd(trained_model, x, y, cfg, indices=index)
    path = tmp_path / "pgd.h5"
    rates = save_attack(path, result, index.numpy(), cfg)
    assert load_success_rates(path) == rates == success_rates(result.success, result.correct)
    assert 0 < rates["success"] < 1


@pytest.mark.parametrize("drop", ["success", "label", "clean_pred"])
def test_incomplete_attack_record_raises(tmp_path, drop):
    path = tmp_path / "pgd.h5"
    save_attack(path, hand_result(), np.arange(3), AttackConfig())
    with h5py.File(path, "a") as h5:
        del h5[drop]
    with pytest.raises(RuntimeError, match=rf"incomplete or corrupt .*missing datasets \['{drop}'\]"):
        load_success_rates(path)


def test_corrupt_or_missing_attack_record_raises(tmp_path):
    path = tmp_path / "pgd.h5"
    path.write_bytes(b"\x89HDF\r\n" + bytes(200))
    with pytest.raises(RuntimeError, match="delete it and rerun"):
        load_success_rates(path)
    with pytest.raises(RuntimeError, match="incomplete or corrupt"):
        load_success_rates(tmp_path / "absent.h5")


def test_metrics_table_joins_metrics_and_attack_records(tmp_path):
    rows = []
    for seed, n_train in ((1, 200), (0, 400), (0, 200)):
        metrics = tmp_path / f"metrics_{seed}_{n_train}.json"
        metrics.write_text(json.dumps({"dataset": "fonts", "mode": "normal", "n_train": n_train, "seed": seed,
                                       "test_error": 0.1, "train_error": 0.0, "epochs": 2}))
        record = tmp_path / f"pgd_{seed}_{n_train}.h5"
        rates = save_attack(record, hand_result(), np.arange(3), AttackConfig())
        rows.append(metrics_row(metrics, {"pgd": record}))
    df = metrics_table(rows)
    assert list(df.columns[:len(COLUMNS)]) == list(COLUMNS)
    assert df[["n_train", "seed"]].values.tolist() == [[200, 0], [200, 1], [400, 0]]
    assert (df["pgd_success"] == rates["success"]).all() and (df["pgd_success_any"] == rates["success_any"]).all()
    assert df["onmanifold_success"].isna().all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_equals_torch_fused_adam_bit_for_bit(dtype):
    torch.manual_seed(0)
    ours_model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).to(dtype)
    ref_model = copy.deepcopy(ours_model)
    ours_model[0].bias.requires_grad_(False)  # frozen parameters are left alone by both
    ref_model[0].bias.requires_grad_(False)
    ours = Adam(ours_model.parameters(), lr=0.01, betas=(0.5, 0.999), weight_decay=1e-4)
    ref = torch.optim.Adam([p for p in ref_model.parameters() if p.requires_grad], lr=0.01, betas=(0.5, 0.999),
                           weight_decay=1e-4, fused=True)
    for step in range(7):
        x = torch.randn(16, 6, dtype=dtype)
        ours.lr = 0.01 * 0.9 ** step
        for group in ref.param_groups:
            group["lr"] = 0.01 * 0.9 ** step
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad()
            # On odd steps only the last layer gets gradients: parameters without one must not move.
            out = model(x) if step % 2 == 0 else model[2](model[1](model[0](x).detach()))
            out.pow(2).mean().backward()
            opt.step()
    assert_same_state(ours_model, ref_model)
    assert not any(p.requires_grad for p in [ours_model[0].bias])


def test_adam_needs_trainable_parameters():
    with pytest.raises(ValueError, match="no parameters"):
        Adam(torch.nn.Linear(2, 2).requires_grad_(False).parameters(), lr=0.1)


def test_fast_layout_keeps_what_the_classifier_computes(train_tensors):
    from manifold_robustness.models import build_classifier

    torch.manual_seed(0)
    plain = build_classifier().eval()
    fast = fast_layout(copy.deepcopy(plain), "cpu")
    assert fast.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = train_tensors[0][:64]
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-4)


def test_a_setting_job_trains_each_seed_as_a_process_of_its_own_would(tmp_path, fonts_data, glyph_bank):
    """Seeds trained one after another in one process (the sequential engine of a setting job) give exactly the
    models and metrics of each seed trained alone: nothing of one seed's run (RNG state, buffers, the shared
    adversary) leaks into the next. Adversarial training, so the attack's random starts are covered too."""
    from manifold_robustness import stages

    data = tmp_path / "fonts.h5"
    write_dataset(data, fonts_data, glyph_bank[0], [str(p) for p in glyph_bank[1]])
    cfg = {"epochs": 2, "batch_size": 50, "lr": 0.01, "lr_decay": 0.95, "weight_decay": 1e-4, "subset_seed": 0,
           "adversarial_fraction": 0.5, "adversarial_attack": {"eps": 0.3, "steps": 2, "step_size": 0.15},
           "engine": "sequential"}

    def run(seeds, tag):
        models = [tmp_path / tag / f"seed{s}" / "model.pt" for s in seeds]
        return stages.train_setting(str(data), models, [m.with_name("metrics.json") for m in models], "fonts",
                                    "adversarial", 200, seeds, cfg, "cpu", 1)

    together, (alone,) = run([1, 0], "together"), run([0], "alone")
    assert [m["seed"] for m in together] == [1, 0]
    assert together[1]["test_error"] == alone["test_error"] and together[1]["history"][-1]["loss"] == \
        alone["history"][-1]["loss"]
    assert together[0]["test_error"] != alone["test_error"] or together[0]["history"] != alone["history"]
    a = torch.load(tmp_path / "together/seed0/model.pt", weights_only=True)
    b = torch.load(tmp_path / "alone/seed0/model.pt", weights_only=True)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_a_setting_job_runs_its_stage_once_per_model():
    from manifold_robustness.stages import for_each_model

    calls = []
    assert for_each_model(lambda model, out: calls.append((model, out)) or out, ["a.pt", "b.pt"],
                          ["a.h5", "b.h5"]) == ["a.h5", "b.h5"]
    assert calls == [("a.pt", "a.h5"), ("b.pt", "b.h5")]
    with pytest.raises(ValueError, match="one path per model"):
        for_each_model(lambda model, out: out, ["a.pt"], ["a.h5", "b.h5"])


class MeanJudge(torch.nn.Module):
    """A judge that reads the class off an image's mean pixel (class k: mean k / 10)."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        k = (images.mean(dim=(1, 2, 3)) * 10).round().long()
        return F.one_hot(k, 10).float()


@pytest.mark.parametrize("shown, kept", [(1, 1.0), (4, 0.0)])
def test_class_keeping_counts_only_fooled_examples_the_judge_sees_as_their_class(tmp_path, shown, kept):
    """Of hand_result's three examples only example 0 is right before the attack and fooled (image 2 was wrong
    already, image 1 never fooled); its kept image shows class `shown` to the judge, its label is 1."""
    result = hand_result()
    result.variables[0, 0] = shown / 10
    path = tmp_path / "onmanifold.h5"
    save_attack(path, result, np.arange(3), AttackConfig())
    rates = class_keeping(MeanJudge(), path)
    assert rates["successful"] == 1
    assert rates["class_kept"] == kept
    assert rates["success_any_kept"] == kept / 2  # of the two examples right before the attack
    assert np.isnan(rates["judge_on_starts"])  # a record without decoded clean points


def test_metrics_table_adds_the_judges_class_keeping_per_record(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"dataset": "fashion", "mode": "normal", "n_train": 200, "seed": 0,
                                   "test_error": 0.1, "train_error": 0.0, "epochs": 2}))
    judged = tmp_path / "class_kept.json"
    judged.write_text(json.dumps({"onmanifold": {"class_kept": 0.75, "success_any_kept": 0.3, "successful": 8,
                                                 "judge_on_starts": 0.9},
                                  "judge": {"model": "judge.pt", "test_error": 0.08}}))
    row = metrics_row(metrics, {}, judged)
    assert row["onmanifold_class_kept"] == 0.75 and row["onmanifold_success_any_kept"] == 0.3
    assert row["onmanifold_successful"] == 8 and row["judge_test_error"] == 0.08
    assert np.isnan(row["onmanifold_learned_class_kept"])  # a dataset without a second on-manifold record
    assert "onmanifold_class_kept" not in metrics_row(metrics, {})


def test_class_keeping_of_a_record_without_successes_is_undefined_not_an_error(tmp_path):
    result = hand_result()
    result.success[:] = False
    path = tmp_path / "onmanifold.h5"
    save_attack(path, result, np.arange(3), AttackConfig())
    rates = class_keeping(MeanJudge(), path)
    assert rates["successful"] == 0 and np.isnan(rates["class_kept"]) and rates["success_any_kept"] == 0.0


def test_judge_stage_writes_each_models_class_keeping_beside_the_judges_error(tmp_path, trained_model):
    """One class_kept.json per model, holding each record's rates as class_keeping computes them with the
    judge read back from disk, and the judge's own test error from its metrics.json."""
    from manifold_robustness.models import save_classifier
    from manifold_robustness.stages import judge_onmanifold

    judge_path, judge_metrics = tmp_path / "judge" / "model.pt", tmp_path / "judge" / "metrics.json"
    save_classifier(trained_model, judge_path)
    judge_metrics.write_text(json.dumps({"test_error": 0.125}))
    records = {"onmanifold": [], "onmanifold_learned": []}
    for seed in (0, 1):
        for name in records:
            result = hand_result()
            result.variables[0, 0] = seed / 10
            path = tmp_path / f"seed{seed}" / f"{name}.h5"
            save_attack(path, result, np.arange(3), AttackConfig())
            records[name].append(str(path))
    outs = [str(tmp_path / f"seed{seed}" / "class_kept.json") for seed in (0, 1)]
    judge_onmanifold(str(judge_path), str(judge_metrics), records, outs, "cpu")
    for i, out in enumerate(outs):
        doc = json.loads(Path(out).read_text())
        assert doc["judge"]["test_error"] == 0.125
        for name in records:
            expected = class_keeping(trained_model, records[name][i])
            assert {k: doc[name][k] for k in expected} == pytest.approx(expected, nan_ok=True)
            assert doc[name]["record"] == records[name][i]
    with pytest.raises(ValueError, match="one record per model"):
        judge_onmanifold(str(judge_path), str(judge_metrics), {"onmanifold": records["onmanifold"][:1]}, outs, "cpu")

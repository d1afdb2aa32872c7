# Config validation and the small input functions the rules share.
import os
from types import SimpleNamespace

from snakemake.utils import validate

from manifold_robustness import costs as job_costs
from manifold_robustness.grid import largest_n, n_grid

validate(config, schema="../../config/schema.yaml")

if (
    config["classifiers"]["lock_step"] == "all_n"
    and config["classifiers"]["n_train_per_mode"]
):
    raise ValueError(
        "classifiers.lock_step: all_n trains every N of classifiers.n_train in one job per mode, so no mode can "
        "have an N grid of its own: drop classifiers.n_train_per_mode, or use lock_step: setting"
    )


def canonical(value):
    """Dicts with sorted keys, recursively: a rule's params then compare equal however the config file orders
    its keys, so reordering a config file reruns nothing."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


for _section in list(config):
    config[_section] = canonical(config[_section])


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    mode="normal|adversarial|onmanifold_true|onmanifold_learned|transformation",
    label=r"\d+",
    n=r"\d+",
    seed=r"\d+",


RUN = "{dataset}/{mode}/N{n}/seed{seed}"
# One job per setting trains (or attacks) the models of all seeds, one after another in one process: a job's
# start-up (importing torch and the package) is then paid once per setting rather than once per model.
SETTING = "{dataset}/{mode}/N{n}"
SEEDS = sorted(config["classifiers"]["seeds"])
# Datasets whose manifold is known exactly (rendered by a true decoder).
TRUE_MANIFOLD = ("fonts",)
N_CLASSES = 10
# The config section holding the attack each training mode uses (others are dropped from its params).
TRAINING_ATTACK = job_costs.TRAINING_ATTACK
# What each job asks a scheduler for: its predicted cost on the run's device (config `device: cuda` for GPU
# nodes, the CPU's rates otherwise) times the config's `resources` factors (manifold_robustness.costs).
RATES = job_costs.load_rates()
COST_DEVICE = "cuda" if config["device"] == "cuda" else "cpu"


def modes_for(dataset):
    """Training modes of a dataset: onmanifold_true only where the true manifold is known."""
    modes = config["classifiers"]["modes"]
    return [m for m in modes if m != "onmanifold_true" or dataset in TRUE_MANIFOLD]


def classifier_runs():
    """Every (dataset, mode, N, seed) the config asks for, as wildcard dicts."""
    cls = config["classifiers"]
    return [
        dict(dataset=d, mode=m, n=n, seed=s)
        for d in config["datasets"]
        for m in modes_for(d)
        for n in n_grid(config, d, m)
        for s in cls["seeds"]
    ]


def per_seed(pattern):
    """`pattern` (with the RUN wildcards) for every seed, the setting's wildcards left open: a setting job's files."""
    return expand(pattern, seed=SEEDS, allow_missing=True)


def all_n(pattern):
    """`pattern` (with the RUN wildcards) for every N and seed, dataset and mode left open: a lock-step job's
    files."""
    return expand(
        pattern,
        n=sorted(config["classifiers"]["n_train"]),
        seed=SEEDS,
        allow_missing=True,
    )


def asks(predict):
    """`runtime` (minutes) and `mem_mb` of a rule whose jobs cost `predict(wildcards)` (a costs.Cost), grown on
    every retry (`attempt`)."""

    def ask(index):
        return lambda wildcards, attempt: job_costs.request(
            predict(wildcards), attempt, config["resources"]
        )[index]

    return {"runtime": ask(0), "mem_mb": ask(1)}


def training_cost(wildcards):
    """One training job: the seeds of a setting, or (lock_step: all_n) every N and seed of a mode."""
    ns = (
        [int(wildcards.n)]
        if "n" in wildcards.keys()
        else n_grid(config, wildcards.dataset, wildcards.mode)
    )
    return job_costs.train(
        RATES,
        COST_DEVICE,
        config,
        wildcards.dataset,
        wildcards.mode,
        [n for n in ns for _ in SEEDS],
    )


def attack_cost(kind):
    """One attack job of `kind` (pgd, pgd_sign, onmanifold: the dataset's manifold, onmanifold_learned)."""

    def cost(wildcards):
        name = (
            f"onmanifold_{onmanifold_kind(wildcards)}" if kind == "onmanifold" else kind
        )
        return job_costs.attack(RATES, COST_DEVICE, config, name, len(SEEDS))

    return cost


def dataset_cost(predict):
    """A job per dataset (VAE-GAN class, judge, distances) whose cost `predict` gives."""
    return lambda wildcards: predict(RATES, COST_DEVICE, config, wildcards.dataset)


def fixed_cost(rule):
    """A job whose cost does not grow with the grid."""
    return lambda wildcards: job_costs.small(RATES, COST_DEVICE, rule)


def per_run(pattern):
    """`pattern` (with the RUN wildcards) filled in for every classifier run."""
    return [pattern.format(**run) for run in classifier_runs()]


def onmanifold_learned_record(run):
    """The learned-manifold record of a run: its own file on FONTS, else the on-manifold record itself."""
    if run["dataset"] in TRUE_MANIFOLD:
        return "results/attacks/{dataset}/{mode}/N{n}/seed{seed}/onmanifold_learned.h5".format(
            **run
        )
    return "results/attacks/{dataset}/{mode}/N{n}/seed{seed}/onmanifold.h5".format(
        **run
    )


def learned_records():
    return [onmanifold_learned_record(run) for run in classifier_runs()]


def vaegan_models(wildcards):
    """The class-specific VAE-GANs of a dataset, in class order."""
    return expand(
        "results/vaegan/{dataset}/class{label}.pt",
        dataset=wildcards.dataset,
        label=range(N_CLASSES),
    )


def vaegan_records(wildcards):
    return expand(
        "results/vaegan/{dataset}/class{label}.json",
        dataset=wildcards.dataset,
        label=range(N_CLASSES),
    )


def training_vaegans(wildcards):
    """VAE-GANs a training run needs: only on-manifold training on the learned manifold."""
    return vaegan_models(wildcards) if wildcards.mode == "onmanifold_learned" else []


def onmanifold_vaegans(wildcards):
    """VAE-GANs the main on-manifold attack needs: none where the true manifold is attacked."""
    return [] if wildcards.dataset in TRUE_MANIFOLD else vaegan_models(wildcards)


def onmanifold_kind(wildcards):
    return "true" if wildcards.dataset in TRUE_MANIFOLD else "learned"


def reference_run(dataset):
    """The model whose examples Fig. 1 shows and which judges VAE-GAN samples: normal, largest N, first seed."""
    return dict(
        dataset=dataset,
        mode="normal",
        n=max(n_grid(config, dataset, "normal")),
        seed=min(config["classifiers"]["seeds"]),
    )


def reference_classifier(wildcards):
    return "results/classifiers/{dataset}/{mode}/N{n}/seed{seed}/model.pt".format(
        **reference_run(wildcards.dataset)
    )


def samples_judge(wildcards):
    """The classifier that judges VAE-GAN samples: the dataset's judge, else the reference model."""
    if config["judge"]["enabled"]:
        return f"results/judges/{wildcards.dataset}/model.pt"
    return reference_classifier(wildcards)


def reference_record(attack):
    """Input function: an attack record of the dataset's reference model, or of its run with another seed."""

    def record(wildcards):
        run = reference_run(wildcards.dataset)
        if hasattr(wildcards, "seed"):
            run["seed"] = wildcards.seed
        return "results/attacks/{dataset}/{mode}/N{n}/seed{seed}/{attack}.h5".format(
            attack=attack, **run
        )

    return record


def fig2_panels():
    return [
        dict(dataset=d, path=f"results/distances/{d}.h5") for d in config["datasets"]
    ]


def fig1_panels():
    """Per dataset: the data file and the reference model's attack records, as Fig. 1 reads them."""
    panels = []
    for dataset in config["datasets"]:
        run = "results/attacks/{dataset}/{mode}/N{n}/seed{seed}".format(
            **reference_run(dataset)
        )
        learned = f"{run}/onmanifold_learned.h5" if dataset in TRUE_MANIFOLD else None
        panels.append(
            dict(
                dataset=dataset,
                data=f"results/data/{dataset}.h5",
                pgd=f"{run}/pgd.h5",
                onmanifold=f"{run}/onmanifold.h5",
                onmanifold_learned=learned,
            )
        )
    return panels


def fig1_inputs(wildcards):
    return [
        p for panel in fig1_panels() for k, p in panel.items() if k != "dataset" and p
    ]


def judged_records(wildcards):
    """A setting's on-manifold records the judge reads, by name, one per seed: the true manifold's and the learned
    one's on FONTS, the learned one's (onmanifold.h5) elsewhere."""
    names = ["onmanifold"] + (
        ["onmanifold_learned"] if wildcards.dataset in TRUE_MANIFOLD else []
    )
    return {
        name: expand(
            f"results/attacks/{RUN}/{name}.h5",
            dataset=wildcards.dataset,
            mode=wildcards.mode,
            n=wildcards.n,
            seed=SEEDS,
        )
        for name in names
    }


def judge_params():
    """The judge trains as a normal classifier of the grid does (train_params of normal training), for the
    judge's own epochs: a change of the grid's epochs does not retrain it."""
    cls = train_params(SimpleNamespace(mode="normal"))
    cls.pop("epochs")
    return cls


# The tables a figure reads, and the attack records each joins: a figure pulls in only the attacks it plots.
TABLE_ATTACKS = {
    "metrics": ("pgd", "onmanifold", "onmanifold_learned")
    + (("pgd_sign",) if config["pgd_sign"]["enabled"] else ()),
    "fig3_onmanifold": ("onmanifold", "onmanifold_learned"),
    "fig4_regular": ("pgd",),
}


def table_inputs(wildcards):
    """Every model's metrics.json and, per attack the table joins, one record per model in the same order."""
    records = {
        "pgd": per_run(f"results/attacks/{RUN}/pgd.h5"),
        "pgd_sign": per_run(f"results/attacks/{RUN}/pgd_sign.h5"),
        "onmanifold": per_run(f"results/attacks/{RUN}/onmanifold.h5"),
        "onmanifold_learned": learned_records(),
    }
    inputs = {"metrics": per_run(f"results/classifiers/{RUN}/metrics.json")}
    inputs.update({a: records[a] for a in TABLE_ATTACKS[wildcards.table]})
    if config["judge"]["enabled"] and "onmanifold" in TABLE_ATTACKS[wildcards.table]:
        inputs["class_kept"] = per_run(f"results/attacks/{RUN}/class_kept.json")
    return inputs


def seed_distances(dataset, seed):
    """The distances file of the normal model with the largest N and `seed`; the reference seed's is Fig. 2's."""
    if seed == reference_run(dataset)["seed"]:
        return f"results/distances/{dataset}.h5"
    return f"results/distances/{dataset}/seed{seed}.h5"


def claims_distances():
    """Per dataset and seed, the distances file claim 1 is judged on."""
    return {
        d: {s: seed_distances(d, s) for s in config["classifiers"]["seeds"]}
        for d in config["datasets"]
    }


# The paper's published numbers: reference data shipped with the repository (reference/paper/README.md), found
# beside the Snakefile whatever the working directory.
PAPER_REFERENCE = os.path.join(workflow.basedir, "reference/paper/paper_reference.csv")
PAPER_DISTANCES = os.path.join(
    workflow.basedir, "reference/paper/paper_distances_and_resnet.csv"
)


def fonts_data_file():
    """The FONTS dataset file where FONTS is run (the report names its fonts count), else nothing."""
    return ["results/data/fonts.h5"] if "fonts" in config["datasets"] else []


def figure_files(name):
    return expand("results/figures/{name}.{ext}", name=name, ext=["pdf", "png"])


def vaegan_quality_files():
    return expand(
        "results/tables/vaegan_{dataset}.csv", dataset=config["datasets"]
    ) + expand(
        "results/figures/vaegan_samples_{dataset}.png", dataset=config["datasets"]
    )


def all_targets():
    figures = [
        "fig1_examples",
        "fig2_manifold_distance",
        "fig3_onmanifold_robustness",
        "fig4_regular_robustness",
    ]
    return (
        [
            "results/tables/metrics.csv",
            "results/tables/paper_comparison.csv",
            "results/report/claims.md",
        ]
        + [f.replace(".h5", ".sha256") for f in fonts_data_file()]
        + vaegan_quality_files()
        + [f for name in figures for f in figure_files(name)]
    )


def fonts_archive_dir(wildcards):
    """The extracted font archive when FONTS come from one, else nothing."""
    if config["fonts"]["source"] == "archive":
        return "resources/fonts/archive"
    return []


# Keys of the classifiers section that lay out the grid: each job reads its own from its wildcards and
# outputs, so adding or dropping a mode or an N reruns no job of the other settings, and dropping a seed none.
# lock_step lays out jobs, not models (each model is the same either way, up to float rounding).
GRID_KEYS = ("modes", "n_train", "n_train_per_mode", "seeds", "lock_step")


def train_params(wildcards):
    """Training settings; the attack inside training only matters (and only triggers reruns) for its mode."""
    cls = {k: v for k, v in config["classifiers"].items() if k not in GRID_KEYS}
    for section in set(TRAINING_ATTACK.values()):
        if section != TRAINING_ATTACK.get(wildcards.mode):
            cls.pop(section)
    return cls


def gpu_count(wildcards):
    """GPUs a training or attack job asks the scheduler for."""
    return 1 if config["device"] == "cuda" else 0


def training_priority(wildcards):
    """Start the longest training jobs first (cost grows with N, about 20x when half of each batch is attacked),
    so that short jobs fill the gaps instead of a long one running alone at the end."""
    n = (
        int(wildcards.n)
        if "n" in wildcards.keys()
        else max(n_grid(config, wildcards.dataset, wildcards.mode))
    )
    return n * (1 if wildcards.mode == "normal" else 20)


def vaegan_priority(wildcards):
    """VAE-GANs gate on-manifold training on the learned manifold: start them before any classifier."""
    return 20 * largest_n(config) + 1

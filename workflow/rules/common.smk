# Config validation and the small input functions the rules share.
from snakemake.utils import validate

validate(config, schema="../../config/schema.yaml")


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    mode="normal|adversarial",
    n=r"\d+",
    seed=r"\d+",


RUN = "{dataset}/{mode}/N{n}/seed{seed}"


def classifier_runs():
    """Every (dataset, mode, N, seed) the config asks for, as wildcard dicts."""
    cls = config["classifiers"]
    return [
        dict(dataset=d, mode=m, n=n, seed=s)
        for d in config["datasets"]
        for m in cls["modes"]
        for n in sorted(cls["n_train"])
        for s in cls["seeds"]
    ]


def per_run(pattern):
    """`pattern` (with the RUN wildcards) filled in for every classifier run."""
    return [pattern.format(**run) for run in classifier_runs()]


def fig4_files():
    return expand("results/figures/fig4_regular_robustness.{ext}", ext=["pdf", "png"])


def all_targets():
    return ["results/tables/metrics.csv"] + fig4_files()


def fonts_archive_dir(wildcards):
    """The extracted font archive when FONTS come from one, else nothing."""
    if config["fonts"]["source"] == "archive":
        return "resources/fonts/archive"
    return []


def train_params(wildcards):
    """Training settings; the attack inside training only matters (and only triggers reruns) for its mode."""
    cls = dict(config["classifiers"])
    if wildcards.mode != "adversarial":
        cls.pop("adversarial_attack")
    return cls


def gpu_count(wildcards):
    """GPUs a training or attack job asks the scheduler for."""
    return 1 if config["device"] == "cuda" else 0


def training_priority(wildcards):
    """Start the longest training jobs first (cost grows with N, about 20x under adversarial training),
    so that short jobs fill the gaps instead of a long one running alone at the end."""
    return int(wildcards.n) * (20 if wildcards.mode == "adversarial" else 1)

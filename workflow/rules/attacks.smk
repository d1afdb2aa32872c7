# Attacks: L_inf PGD (the paper's, and a signed-step one beside it) and on-manifold attacks (true and learned manifold) on fixed subsets of test images,
# with per-example records; one job per setting (dataset, mode, N) attacks the models of all seeds.


rule attack_pgd:
    input:
        data="results/data/{dataset}.h5",
        models=per_seed(f"results/classifiers/{RUN}/model.pt"),
    output:
        per_seed(f"results/attacks/{RUN}/pgd.h5"),
    log:
        f"logs/attack_pgd/{SETTING}.log",
    benchmark:
        f"results/benchmarks/attack_pgd/{SETTING}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["pgd"]["threads"]
    resources:
        **asks(attack_cost("pgd")),
        gpu=gpu_count,
    params:
        pgd=config["pgd"],
        device=config["device"],
    script:
        "../scripts/attack_pgd.py"


# The second L_inf evaluation (pgd_sign), reported beside the paper's attack on the same images.
use rule attack_pgd as attack_pgd_sign with:
    output:
        per_seed(f"results/attacks/{RUN}/pgd_sign.h5"),
    log:
        f"logs/attack_pgd_sign/{SETTING}.log",
    benchmark:
        f"results/benchmarks/attack_pgd_sign/{SETTING}.tsv"
    resources:
        **asks(attack_cost("pgd_sign")),
        gpu=gpu_count,
    params:
        pgd={**config["pgd"], **config["pgd_sign"]},
        device=config["device"],


rule attack_onmanifold:
    input:
        data="results/data/{dataset}.h5",
        models=per_seed(f"results/classifiers/{RUN}/model.pt"),
        vaegans=onmanifold_vaegans,
    output:
        per_seed(f"results/attacks/{RUN}/onmanifold.h5"),
    log:
        f"logs/attack_onmanifold/{SETTING}.log",
    benchmark:
        f"results/benchmarks/attack_onmanifold/{SETTING}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["onmanifold"]["threads"]
    resources:
        **asks(attack_cost("onmanifold")),
        gpu=gpu_count,
    params:
        manifold=onmanifold_kind,
        onmanifold=config["onmanifold"],
        device=config["device"],
    script:
        "../scripts/attack_onmanifold.py"


rule attack_onmanifold_learned:
    input:
        data="results/data/{dataset}.h5",
        models=per_seed(f"results/classifiers/{RUN}/model.pt"),
        vaegans=vaegan_models,
    output:
        per_seed(f"results/attacks/{RUN}/onmanifold_learned.h5"),
    log:
        f"logs/attack_onmanifold_learned/{SETTING}.log",
    benchmark:
        f"results/benchmarks/attack_onmanifold_learned/{SETTING}.tsv"
    wildcard_constraints:
        dataset="|".join(TRUE_MANIFOLD),
    conda:
        "../../envs/torch.yaml"
    threads: config["onmanifold"]["threads"]
    resources:
        **asks(attack_cost("onmanifold_learned")),
        gpu=gpu_count,
    params:
        manifold="learned",
        onmanifold=config["onmanifold"],
        device=config["device"],
    script:
        "../scripts/attack_onmanifold.py"

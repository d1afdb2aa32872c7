# Attacks: L_inf PGD and on-manifold attacks (true and learned manifold) on fixed subsets of test images,
# with per-example records.


rule attack_pgd:
    input:
        data="results/data/{dataset}.h5",
        model=f"results/classifiers/{RUN}/model.pt",
    output:
        f"results/attacks/{RUN}/pgd.h5",
    log:
        f"logs/attack_pgd/{RUN}.log",
    benchmark:
        f"results/benchmarks/attack_pgd/{RUN}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["pgd"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_count,
    params:
        pgd=config["pgd"],
        device=config["device"],
    script:
        "../scripts/attack_pgd.py"


rule attack_onmanifold:
    input:
        data="results/data/{dataset}.h5",
        model=f"results/classifiers/{RUN}/model.pt",
        vaegans=onmanifold_vaegans,
    output:
        f"results/attacks/{RUN}/onmanifold.h5",
    log:
        f"logs/attack_onmanifold/{RUN}.log",
    benchmark:
        f"results/benchmarks/attack_onmanifold/{RUN}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["onmanifold"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
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
        model=f"results/classifiers/{RUN}/model.pt",
        vaegans=vaegan_models,
    output:
        f"results/attacks/{RUN}/onmanifold_learned.h5",
    log:
        f"logs/attack_onmanifold_learned/{RUN}.log",
    benchmark:
        f"results/benchmarks/attack_onmanifold_learned/{RUN}.tsv"
    wildcard_constraints:
        dataset="|".join(TRUE_MANIFOLD),
    conda:
        "../../envs/torch.yaml"
    threads: config["onmanifold"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpu_count,
    params:
        manifold="learned",
        onmanifold=config["onmanifold"],
        device=config["device"],
    script:
        "../scripts/attack_onmanifold.py"

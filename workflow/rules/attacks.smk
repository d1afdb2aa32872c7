# Attacks: L_inf PGD on a fixed subset of test images, per-example records.


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

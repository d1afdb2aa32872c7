# Distance to the manifold (Fig. 2): clean test images, their regular and on-manifold adversarial examples, for
# the reference model of each dataset (normal training, largest N, first seed).


rule distances:
    input:
        data="results/data/{dataset}.h5",
        pgd=reference_record("pgd"),
        onmanifold=reference_record("onmanifold"),
    output:
        "results/distances/{dataset}.h5",
    log:
        "logs/distances/{dataset}.log",
    benchmark:
        "results/benchmarks/distances/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["distances"]["threads"]
    resources:
        **asks(dataset_cost(job_costs.distances)),
        gpu=gpu_count,
    params:
        distances=config["distances"],
        device=config["device"],
    script:
        "../scripts/distances.py"


# The same measurement for the other seeds' normal models with the largest N: claim 1's interval over seeds.
# Its input functions read the {seed} wildcard where there is one.
use rule distances as distances_seed with:
    output:
        "results/distances/{dataset}/seed{seed}.h5",
    log:
        "logs/distances/{dataset}/seed{seed}.log",
    benchmark:
        "results/benchmarks/distances/{dataset}/seed{seed}.tsv"

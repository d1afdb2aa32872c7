# The learned manifold: one class-specific VAE-GAN per (dataset, class), each its own job.


rule train_vaegan:
    input:
        data="results/data/{dataset}.h5",
    output:
        model="results/vaegan/{dataset}/class{label}.pt",
        record="results/vaegan/{dataset}/class{label}.json",
    log:
        "logs/train_vaegan/{dataset}/class{label}.log",
    benchmark:
        "results/benchmarks/train_vaegan/{dataset}/class{label}.tsv"
    priority: vaegan_priority
    conda:
        "../../envs/torch.yaml"
    threads: config["vaegan"]["threads"]
    resources:
        **asks(dataset_cost(job_costs.vaegan)),
        gpu=gpu_count,
    params:
        vaegan=config["vaegan"],
        device=config["device"],
    script:
        "../scripts/train_vaegan.py"


rule vaegan_quality:
    input:
        models=vaegan_models,
        records=vaegan_records,
        classifier=samples_judge,
    output:
        table="results/tables/vaegan_{dataset}.csv",
        samples=report(
            "results/figures/vaegan_samples_{dataset}.png",
            caption="../report/vaegan_samples.rst",
            category="VAE-GANs",
        ),
    log:
        "logs/vaegan_quality/{dataset}.log",
    benchmark:
        "results/benchmarks/vaegan_quality/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        **asks(fixed_cost("vaegan_quality")),
        gpu=gpu_count,
    params:
        n_samples=config["vaegan"]["quality_samples"],
        seed=config["vaegan"]["seed"],
        device=config["device"],
    script:
        "../scripts/vaegan_quality.py"

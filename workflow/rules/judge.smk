# The judge: per dataset, a classifier that takes part in no attack and no verdict (normal training on every
# training image, a seed of its own), and what it says of each model's successful on-manifold examples.


rule train_judge:
    input:
        data="results/data/{dataset}.h5",
    output:
        model="results/judges/{dataset}/model.pt",
        metrics="results/judges/{dataset}/metrics.json",
    log:
        "logs/train_judge/{dataset}.log",
    benchmark:
        "results/benchmarks/train_judge/{dataset}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["judge"]["threads"]
    resources:
        **asks(dataset_cost(job_costs.judge)),
        gpu=gpu_count,
    params:
        classifiers=judge_params(),
        judge=config["judge"],
        device=config["device"],
    script:
        "../scripts/train_judge.py"


rule judge_onmanifold:
    input:
        unpack(judged_records),
        judge="results/judges/{dataset}/model.pt",
        judge_metrics="results/judges/{dataset}/metrics.json",
    output:
        per_seed(f"results/attacks/{RUN}/class_kept.json"),
    log:
        f"logs/judge_onmanifold/{SETTING}.log",
    benchmark:
        f"results/benchmarks/judge_onmanifold/{SETTING}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: config["judge"]["threads"]
    resources:
        **asks(fixed_cost("judge_onmanifold")),
        gpu=gpu_count,
    params:
        device=config["device"],
    script:
        "../scripts/judge_onmanifold.py"

# Classifiers: the paper's network trained on nested subsets of N images, normally or with half of each batch
# adversarial (PGD, on the true or learned manifold, or adversarial transformations); one job per setting
# (dataset, mode, N) trains the models of all seeds, or with `classifiers.lock_step: all_n` one job per
# (dataset, mode) trains all N and seeds in one lock step.


rule train_classifier:
    input:
        data="results/data/{dataset}.h5",
        vaegans=training_vaegans,
    output:
        models=per_seed(f"results/classifiers/{RUN}/model.pt"),
        metrics=per_seed(f"results/classifiers/{RUN}/metrics.json"),
    log:
        f"logs/train_classifier/{SETTING}.log",
    benchmark:
        f"results/benchmarks/train_classifier/{SETTING}.tsv"
    priority: training_priority
    conda:
        "../../envs/torch.yaml"
    threads: config["classifiers"]["threads"]
    resources:
        **asks(training_cost),
        gpu=gpu_count,
    params:
        classifiers=train_params,
        device=config["device"],
    script:
        "../scripts/train_classifier.py"


if config["classifiers"]["lock_step"] == "all_n":

    # One job per (dataset, mode) trains every N and seed in one lock step (stages.train_setting); the same
    # files as the per-setting jobs, so the rule order picks this one.
    use rule train_classifier as train_classifier_all_n with:
        output:
            models=all_n(f"results/classifiers/{RUN}/model.pt"),
            metrics=all_n(f"results/classifiers/{RUN}/metrics.json"),
        log:
            "logs/train_classifier/{dataset}/{mode}/all_n.log",
        benchmark:
            "results/benchmarks/train_classifier/{dataset}/{mode}/all_n.tsv"
        resources:
            **asks(training_cost),
            gpu=gpu_count,

    ruleorder: train_classifier_all_n > train_classifier

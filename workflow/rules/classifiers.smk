# Classifiers: the paper's network trained on nested subsets of N images, normally or with half of each batch
# adversarial (PGD, on the true or learned manifold, or adversarial transformations); one job per setting
# (dataset, mode, N) trains the models of all seeds.


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
        mem_mb=4000,
        runtime=setting_runtime(240),
        gpu=gpu_count,
    params:
        classifiers=train_params,
        device=config["device"],
    script:
        "../scripts/train_classifier.py"

# Classifiers: the paper's network trained on nested subsets of N images, normally or with half of each batch
# adversarial (PGD, on the true or learned manifold, or adversarial transformations).


rule train_classifier:
    input:
        data="results/data/{dataset}.h5",
        vaegans=training_vaegans,
    output:
        model=f"results/classifiers/{RUN}/model.pt",
        metrics=f"results/classifiers/{RUN}/metrics.json",
    log:
        f"logs/train_classifier/{RUN}.log",
    benchmark:
        f"results/benchmarks/train_classifier/{RUN}.tsv"
    priority: training_priority
    conda:
        "../../envs/torch.yaml"
    threads: config["classifiers"]["threads"]
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=gpu_count,
    params:
        classifiers=train_params,
        device=config["device"],
    script:
        "../scripts/train_classifier.py"

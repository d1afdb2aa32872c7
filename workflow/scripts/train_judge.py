"""Snakemake adapter: train a dataset's judge (a normal classifier on every training image, its own seed)."""

from manifold_robustness.stages import log_to, train_judge

log_to(snakemake.log[0])
params = snakemake.params
train_judge(snakemake.input.data, snakemake.output.model, snakemake.output.metrics, snakemake.wildcards.dataset,
            params.classifiers, params.judge, params.device, snakemake.threads)

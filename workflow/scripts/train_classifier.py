"""Snakemake adapter: train the classifiers of one setting (dataset, mode, N), one per seed, or of every N of a
(dataset, mode) in one lock step: model.pt and metrics.json each, their N and seed read from their folders."""

from manifold_robustness.stages import log_to, n_train_of, seeds_of, train_setting

log_to(snakemake.log[0])
wc, out, params = snakemake.wildcards, snakemake.output, snakemake.params
train_setting(snakemake.input.data, out.models, out.metrics, wc.dataset, wc.mode, n_train_of(out.models),
              seeds_of(out.models), params.classifiers, params.device, snakemake.threads,
              list(snakemake.input.vaegans))

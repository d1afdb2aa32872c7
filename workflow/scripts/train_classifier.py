"""Snakemake adapter: train the classifiers of one setting (dataset, mode, N), one per seed: model.pt and
metrics.json each."""

from manifold_robustness.stages import log_to, seeds_of, train_setting

log_to(snakemake.log[0])
wc, out, params = snakemake.wildcards, snakemake.output, snakemake.params
train_setting(snakemake.input.data, out.models, out.metrics, wc.dataset, wc.mode, int(wc.n), seeds_of(out.models),
              params.classifiers, params.device, snakemake.threads, list(snakemake.input.vaegans))

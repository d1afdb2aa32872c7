"""Snakemake adapter: train the classifiers of one setting (dataset, mode, N), one per seed: model.pt and
metrics.json each."""

from manifold_robustness.stages import for_each_seed, log_to, train

log_to(snakemake.log[0])
wc, out = snakemake.wildcards, snakemake.output
for_each_seed(lambda seed, model, metrics: train(snakemake.input.data, model, metrics, wc.dataset, wc.mode, int(wc.n),
                                                 seed, snakemake.params.classifiers, snakemake.params.device,
                                                 snakemake.threads, list(snakemake.input.vaegans)),
              snakemake.params.seeds, out.models, out.metrics)

"""Snakemake adapter: train one classifier (dataset, mode, N, seed) and write model.pt and metrics.json."""

from manifold_robustness.stages import log_to, train

log_to(snakemake.log[0])
wc = snakemake.wildcards
train(snakemake.input.data, snakemake.output.model, snakemake.output.metrics, wc.dataset, wc.mode, int(wc.n),
      int(wc.seed), snakemake.params.classifiers, snakemake.params.device, snakemake.threads,
      list(snakemake.input.vaegans))

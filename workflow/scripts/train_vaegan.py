"""Snakemake adapter: train the VAE-GAN of one (dataset, class) and write its model and quality record."""

from manifold_robustness.stages import log_to, train_vaegan_stage

log_to(snakemake.log[0])
wc = snakemake.wildcards
train_vaegan_stage(snakemake.input.data, snakemake.output.model, snakemake.output.record, wc.dataset, int(wc.label),
                   snakemake.params.vaegan, snakemake.params.device, snakemake.threads)

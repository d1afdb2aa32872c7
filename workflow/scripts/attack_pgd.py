"""Snakemake adapter: L_inf PGD against the classifiers of one setting, a per-example record (pgd.h5) each."""

from manifold_robustness.stages import attack_pgd, for_each_model, log_to

log_to(snakemake.log[0])
for_each_model(lambda model, out: attack_pgd(snakemake.input.data, model, out, snakemake.params.pgd,
                                             snakemake.params.device, snakemake.threads),
               snakemake.input.models, snakemake.output)

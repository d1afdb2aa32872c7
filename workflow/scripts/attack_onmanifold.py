"""Snakemake adapter: on-manifold attack (true or learned manifold) against the classifiers of one setting."""

from manifold_robustness.stages import attack_onmanifold, for_each_model, log_to

log_to(snakemake.log[0])
params = snakemake.params
for_each_model(lambda model, out: attack_onmanifold(snakemake.input.data, model, out, params.manifold,
                                                    params.onmanifold, list(snakemake.input.vaegans),
                                                    params.device, snakemake.threads),
               snakemake.input.models, snakemake.output)

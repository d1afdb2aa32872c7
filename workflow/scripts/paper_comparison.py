"""Snakemake adapter: set this run's metrics beside the paper's published numbers."""

from manifold_robustness.stages import compare_with_paper, log_to

log_to(snakemake.log[0])
compare_with_paper(snakemake.input.table, snakemake.input.reference, snakemake.output[0],
                   snakemake.params.confidence)

"""Snakemake adapter: judge the paper's claims on this run and on the paper's own numbers."""

from manifold_robustness.stages import log_to, report_claims

log_to(snakemake.log[0])
report_claims(snakemake.input.table, snakemake.params.distances, snakemake.params.config, snakemake.output.json,
              snakemake.output.md, snakemake.input.comparison, snakemake.output.front_page,
              snakemake.input.fonts[0] if snakemake.input.fonts else None, snakemake.input.reference,
              snakemake.input.paper_distances)

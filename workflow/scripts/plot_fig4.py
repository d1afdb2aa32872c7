"""Snakemake adapter: draw Fig. 4 from metrics.csv."""

from manifold_robustness.stages import log_to, plot_fig4

log_to(snakemake.log[0])
plot_fig4(snakemake.input[0], snakemake.output.pdf, snakemake.output.png, snakemake.params.success_column,
          list(snakemake.params.datasets))

"""Snakemake adapter: draw Fig. 4 from its table, beside the paper's values."""

from manifold_robustness.stages import log_to, plot_fig4

log_to(snakemake.log[0])
plot_fig4(snakemake.input.table, snakemake.output.pdf, snakemake.output.png, snakemake.params.success_column,
          list(snakemake.params.datasets), snakemake.input.paper)

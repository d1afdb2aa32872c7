"""Snakemake adapter: draw Fig. 3 from its table, beside the paper's values."""

from manifold_robustness.stages import log_to, plot_fig3

log_to(snakemake.log[0])
plot_fig3(snakemake.input.table, snakemake.output.pdf, snakemake.output.png, snakemake.params.success_column,
          snakemake.input.paper)

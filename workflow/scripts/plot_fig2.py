"""Snakemake adapter: draw Fig. 2 from the distance files, beside the paper's histograms."""

from manifold_robustness.stages import log_to, plot_fig2

log_to(snakemake.log[0])
plot_fig2(snakemake.params.panels, snakemake.output.pdf, snakemake.output.png, snakemake.input.paper)

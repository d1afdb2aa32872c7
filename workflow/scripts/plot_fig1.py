"""Snakemake adapter: draw Fig. 1 from the reference model's attack records."""

from manifold_robustness.stages import log_to, plot_fig1

log_to(snakemake.log[0])
plot_fig1(snakemake.params.panels, snakemake.output.pdf, snakemake.output.png, snakemake.params.n_examples)

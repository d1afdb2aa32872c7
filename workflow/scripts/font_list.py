"""Snakemake adapter: the fonts of results/data/fonts.h5 as a sha256sum manifest beside it."""

from manifold_robustness.stages import log_to, write_font_list

log_to(snakemake.log[0])
write_font_list(snakemake.input[0], snakemake.output[0])

"""Snakemake adapter: render FONTS into results/data/fonts.h5."""

from manifold_robustness.stages import build_fonts, log_to

log_to(snakemake.log[0])
archive = snakemake.input.archive
build_fonts(snakemake.params.fonts, snakemake.output[0], archive_dir=str(archive) if archive else None)

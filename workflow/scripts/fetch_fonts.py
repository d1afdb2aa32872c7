"""Snakemake adapter: download (or reuse) the pinned font archive and extract its fonts."""

from manifold_robustness.stages import fetch_fonts, log_to

log_to(snakemake.log[0])
fetch_fonts(snakemake.params.archive, snakemake.params.archive_path, snakemake.output[0])

"""Snakemake adapter: EMNIST digits or Fashion-MNIST through torchvision into results/data/{dataset}.h5."""

from manifold_robustness.stages import build_torchvision, log_to

log_to(snakemake.log[0])
params = snakemake.params
build_torchvision(snakemake.wildcards.dataset, params.root, snakemake.output[0], params.download, params.system)

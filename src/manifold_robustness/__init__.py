"""Reproduction of "Disentangling Adversarial Robustness and Generalization" (Stutz, Hein, Schiele, CVPR 2019).

Every stage of the Snakemake workflow is a thin adapter over a function of this package; the package
itself knows nothing of Snakemake, so the tests call exactly what the workflow runs.
"""

__version__ = "0.1.0"

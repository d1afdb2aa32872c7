# Reproduction of "Disentangling Adversarial Robustness and Generalization" (Stutz, Hein, Schiele, CVPR 2019).
# This file is the table of contents; each stage lives in workflow/rules/, its logic in src/manifold_robustness/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/vaegan.smk"
include: "workflow/rules/classifiers.smk"
include: "workflow/rules/attacks.smk"
include: "workflow/rules/distances.smk"
include: "workflow/rules/figures.smk"


rule all:
    default_target: True
    input:
        all_targets(),

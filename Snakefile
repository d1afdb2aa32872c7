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
include: "workflow/rules/judge.smk"
include: "workflow/rules/distances.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


# Downloads run where the workflow is started (a cluster's login node has the internet its compute nodes often
# lack): fetch_fonts, and torchvision_data, which downloads EMNIST or Fashion-MNIST and converts it in a minute.
localrules:
    fetch_fonts,
    torchvision_data,
    font_list,
    metrics_table,
    paper_comparison,
    claims,
    plot_fig1,
    plot_fig2,
    plot_fig3,
    plot_fig4,
    fig1,
    fig2,
    fig3,
    fig4,
    all,


rule all:
    default_target: True
    input:
        all_targets(),

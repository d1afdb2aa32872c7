# Tables and figures: every point plotted comes from a table below or an attack record it names.


rule metrics_table:
    input:
        unpack(table_inputs),
    output:
        report(
            "results/tables/{table}.csv",
            caption="../report/metrics.rst",
            category="Tables",
        ),
    log:
        "logs/metrics_table/{table}.log",
    benchmark:
        "results/benchmarks/metrics_table/{table}.tsv"
    wildcard_constraints:
        table="|".join(TABLE_ATTACKS),
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/metrics_table.py"


rule paper_comparison:
    input:
        table="results/tables/metrics.csv",
        reference=PAPER_REFERENCE,
    output:
        report(
            "results/tables/paper_comparison.csv",
            caption="../report/paper_comparison.rst",
            category="Tables",
        ),
    log:
        "logs/paper_comparison/paper_comparison.log",
    benchmark:
        "results/benchmarks/paper_comparison/paper_comparison.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        confidence=config["claims"]["confidence"],
    script:
        "../scripts/paper_comparison.py"


rule plot_fig1:
    input:
        fig1_inputs,
    output:
        pdf=report(
            "results/figures/fig1_examples.pdf",
            caption="../report/fig1.rst",
            category="Figures",
        ),
        png="results/figures/fig1_examples.png",
    log:
        "logs/plot_fig1/fig1.log",
    benchmark:
        "results/benchmarks/plot_fig1/fig1.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        panels=fig1_panels(),
        n_examples=config["figures"]["fig1_examples"],
    script:
        "../scripts/plot_fig1.py"


rule plot_fig2:
    input:
        distances=[panel["path"] for panel in fig2_panels()],
        paper=PAPER_DISTANCES,
    output:
        pdf=report(
            "results/figures/fig2_manifold_distance.pdf",
            caption="../report/fig2.rst",
            category="Figures",
        ),
        png="results/figures/fig2_manifold_distance.png",
    log:
        "logs/plot_fig2/fig2.log",
    benchmark:
        "results/benchmarks/plot_fig2/fig2.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        panels=fig2_panels(),
    script:
        "../scripts/plot_fig2.py"


rule plot_fig3:
    input:
        table="results/tables/fig3_onmanifold.csv",
        paper=PAPER_REFERENCE,
    output:
        pdf=report(
            "results/figures/fig3_onmanifold_robustness.pdf",
            caption="../report/fig3.rst",
            category="Figures",
        ),
        png="results/figures/fig3_onmanifold_robustness.png",
    log:
        "logs/plot_fig3/fig3.log",
    benchmark:
        "results/benchmarks/plot_fig3/fig3.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        success_column=config["figures"]["onmanifold_success_column"],
    script:
        "../scripts/plot_fig3.py"


rule plot_fig4:
    input:
        table="results/tables/fig4_regular.csv",
        paper=PAPER_REFERENCE,
    output:
        pdf=report(
            "results/figures/fig4_regular_robustness.pdf",
            caption="../report/fig4.rst",
            category="Figures",
        ),
        png="results/figures/fig4_regular_robustness.png",
    log:
        "logs/plot_fig4/fig4.log",
    benchmark:
        "results/benchmarks/plot_fig4/fig4.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        success_column=config["figures"]["success_column"],
        datasets=config["datasets"],
    script:
        "../scripts/plot_fig4.py"


rule fig1:
    input:
        figure_files("fig1_examples"),


rule fig2:
    input:
        figure_files("fig2_manifold_distance"),


rule fig3:
    input:
        figure_files("fig3_onmanifold_robustness"),


rule fig4:
    input:
        figure_files("fig4_regular_robustness"),

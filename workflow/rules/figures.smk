# Tables and figures: everything plotted comes from results/tables/metrics.csv.


rule metrics_table:
    input:
        metrics=per_run(f"results/classifiers/{RUN}/metrics.json"),
        pgd=per_run(f"results/attacks/{RUN}/pgd.h5"),
    output:
        report(
            "results/tables/metrics.csv",
            caption="../report/metrics.rst",
            category="Tables",
        ),
    log:
        "logs/metrics_table/metrics_table.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/metrics_table.py"


rule plot_fig4:
    input:
        "results/tables/metrics.csv",
    output:
        pdf=report(
            "results/figures/fig4_regular_robustness.pdf",
            caption="../report/fig4.rst",
            category="Figures",
        ),
        png="results/figures/fig4_regular_robustness.png",
    log:
        "logs/plot_fig4/fig4.log",
    conda:
        "../../envs/torch.yaml"
    params:
        success_column=config["figures"]["success_column"],
    script:
        "../scripts/plot_fig4.py"


rule fig4:
    input:
        fig4_files(),

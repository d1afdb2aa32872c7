# The verdict on the paper's four claims: statistics per dataset with intervals over seeds, thresholds from config.


rule claims:
    input:
        table="results/tables/metrics.csv",
        distances=[p for seeds in claims_distances().values() for p in seeds.values()],
        comparison="results/tables/paper_comparison.csv",
        fonts=fonts_data_file(),
        reference=PAPER_REFERENCE,
        paper_distances=PAPER_DISTANCES,
    output:
        md=report(
            "results/report/claims.md",
            caption="../report/claims.rst",
            category="Claims",
        ),
        json="results/report/claims.json",
        front_page="results/report/front_page.rst",
    log:
        "logs/claims/claims.log",
    benchmark:
        "results/benchmarks/claims/claims.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        distances=claims_distances(),
        config={
            key: config[key]
            for key in (
                "scale",
                "datasets",
                "claims",
                "figures",
                "classifiers",
                "fonts",
                "pgd",
                "onmanifold",
                "vaegan",
            )
        },
    script:
        "../scripts/claims.py"

# Datasets: FONTS rendered from a glyph bank of fonts on the machine or from a pinned archive; EMNIST (digits) and
# Fashion-MNIST through torchvision's dataset classes.


rule fetch_fonts:
    output:
        directory("resources/fonts/archive"),
    log:
        "logs/fetch_fonts/fetch_fonts.log",
    benchmark:
        "results/benchmarks/fetch_fonts/fetch_fonts.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        archive=config["fonts"]["archive"],
        archive_path=f"resources/fonts/{config['fonts']['archive']['filename']}",
    script:
        "../scripts/fetch_fonts.py"


rule fonts_data:
    input:
        archive=fonts_archive_dir,
    output:
        "results/data/fonts.h5",
    log:
        "logs/fonts_data/fonts.log",
    benchmark:
        "results/benchmarks/fonts_data/fonts.tsv"
    conda:
        "../../envs/torch.yaml"
    resources:
        **asks(lambda wildcards: job_costs.fonts_data(RATES, COST_DEVICE, config)),
    params:
        fonts=config["fonts"],
    script:
        "../scripts/fonts_data.py"


rule font_list:
    input:
        "results/data/fonts.h5",
    output:
        report(
            "results/data/fonts.sha256",
            caption="../report/font_list.rst",
            category="Data",
        ),
    log:
        "logs/font_list/fonts.log",
    conda:
        "../../envs/torch.yaml"
    script:
        "../scripts/font_list.py"


rule torchvision_data:
    output:
        "results/data/{dataset}.h5",
    log:
        "logs/torchvision_data/{dataset}.log",
    benchmark:
        "results/benchmarks/torchvision_data/{dataset}.tsv"
    wildcard_constraints:
        dataset="emnist|fashion",
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        root="resources/{dataset}",
        download=config["download"],
        system=config["system_datasets"],
    script:
        "../scripts/torchvision_data.py"

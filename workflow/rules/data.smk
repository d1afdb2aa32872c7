# Datasets: FONTS rendered from a glyph bank of fonts on the machine or from a pinned archive.


rule fetch_fonts:
    output:
        directory("resources/fonts/archive"),
    log:
        "logs/fetch_fonts/fetch_fonts.log",
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
        mem_mb=8000,
        runtime=60,
    params:
        fonts=config["fonts"],
    script:
        "../scripts/fonts_data.py"

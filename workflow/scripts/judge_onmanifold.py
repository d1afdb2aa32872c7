"""Snakemake adapter: how many successful on-manifold examples of one setting's models keep their class, by the
dataset's judge; one class_kept.json per model."""

from manifold_robustness.stages import judge_onmanifold, log_to

log_to(snakemake.log[0])
records = {name: list(snakemake.input[name]) for name in ("onmanifold", "onmanifold_learned")
           if name in snakemake.input.keys()}
judge_onmanifold(snakemake.input.judge, snakemake.input.judge_metrics, records, list(snakemake.output),
                 snakemake.params.device, snakemake.threads)

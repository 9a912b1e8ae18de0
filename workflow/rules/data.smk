# Corpus (Dolma format) -> tokenizer -> one Megatron indexed dataset per shard -> manifest.
#
# The tokenizer and the manifest feed every training job. They are checkpoints: when one of
# them has run, Snakemake re-evaluates the jobs downstream, and a training job whose input was
# rewritten with identical content (the checksum recorded when it ran) is not re-run. A plain
# rule would schedule every training job as soon as the data job was scheduled. Config values
# these jobs would reject (data.mixture, tokenizer.file) are checked at parse time
# (archscale.preflight), before Snakemake deletes a finished output to re-run its job.


checkpoint tokenizer:
    input:
        tokenizer_input,
    output:
        tokenizer="results/tokenizer/tokenizer.json",
        meta="results/tokenizer/tokenizer.meta.json",
    log:
        "logs/tokenizer.log",
    benchmark:
        "benchmarks/tokenizer.tsv"
    priority: DATA_PRIORITY
    conda:
        "../../environment.yml"
    threads: 8
    params:
        tokenizer=STUDY.tokenizer,
        # BPE training reads training documents only: the held-out split stays unseen.
        valid_fraction=STUDY.data["valid_fraction"],
        on_bad_record=STUDY.data["on_bad_record"],
    script:
        "../scripts/tokenizer.py"


rule tokenize:
    input:
        shard=shard_path,
        tokenizer="results/tokenizer/tokenizer.json",
        meta="results/tokenizer/tokenizer.meta.json",
    output:
        train_bin="results/data/{source}/{shard}.train.bin",
        train_idx="results/data/{source}/{shard}.train.idx",
        valid_bin="results/data/{source}/{shard}.valid.bin",
        valid_idx="results/data/{source}/{shard}.valid.idx",
        record="results/data/{source}/{shard}.json",
    log:
        "logs/tokenize/{source}/{shard}.log",
    # No benchmark (snakemake forbids it on cached rules): the log has the timing.
    cache: "omit-software"
    priority: DATA_PRIORITY
    conda:
        "../../environment.yml"
    # One thread per job: shards are the unit of parallelism.
    threads: 1
    params:
        valid_fraction=STUDY.data["valid_fraction"],
        on_bad_record=STUDY.data["on_bad_record"],
    script:
        "../scripts/tokenize.py"


checkpoint data_manifest:
    input:
        records=all_shard_records(),
        tokenizer="results/tokenizer/tokenizer.json",
        tokenizer_meta="results/tokenizer/tokenizer.meta.json",
    output:
        "results/data/manifest.json",
    log:
        "logs/data_manifest.log",
    priority: DATA_PRIORITY
    conda:
        "../../environment.yml"
    params:
        mixture=STUDY.data["mixture"],
        seed=STUDY.data["seed"],
    script:
        "../scripts/data_manifest.py"

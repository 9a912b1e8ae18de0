# Corpus (Dolma format) -> tokenizer -> one Megatron indexed dataset per shard -> manifest.


rule tokenizer:
    input:
        tokenizer_input,
    output:
        tokenizer="results/tokenizer/tokenizer.json",
        meta="results/tokenizer/tokenizer.meta.json",
    log:
        "logs/tokenizer.log",
    benchmark:
        "benchmarks/tokenizer.tsv"
    conda:
        "../../environment.yml"
    threads: 8
    params:
        tokenizer=config["tokenizer"],
        # BPE training reads training documents only: the held-out split stays unseen.
        valid_fraction=config["data"]["valid_fraction"],
        on_bad_record=config["data"]["on_bad_record"],
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
    conda:
        "../../environment.yml"
    # One thread per job: shards are the unit of parallelism.
    threads: 1
    params:
        valid_fraction=config["data"]["valid_fraction"],
        on_bad_record=config["data"]["on_bad_record"],
    script:
        "../scripts/tokenize.py"


rule data_manifest:
    input:
        records=all_shard_records(),
        tokenizer="results/tokenizer/tokenizer.json",
        tokenizer_meta="results/tokenizer/tokenizer.meta.json",
    output:
        "results/data/manifest.json",
    log:
        "logs/data_manifest.log",
    conda:
        "../../environment.yml"
    params:
        mixture=config["data"]["mixture"],
        seed=config["data"]["seed"],
    script:
        "../scripts/data_manifest.py"

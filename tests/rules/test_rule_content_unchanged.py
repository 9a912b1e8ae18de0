"""The data rules (workflow/rules/data.smk, with their real scripts) rewritten with identical
content do not re-run what consumes them: a stand-in training rule counts its runs.

The tokenizer and the manifest are checkpoints: Snakemake re-evaluates the jobs downstream once
they have run, and the training job's recorded input checksums match. The control case turns
them back into plain rules to show that Snakemake would otherwise schedule training again."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.rules import REPO, default_config, run_snakemake, write_config, write_corpus

pytestmark = pytest.mark.slow

SNAKEFILE = """
from pathlib import Path
from archscale.preflight import preflight

configfile: "config/config.yaml"
STUDY = preflight(config, notify=lambda line: None)
DATA_PRIORITY = 1
CORPUS_DIR = Path(config["data"]["corpus_dir"])
SHARDS = sorted(CORPUS_DIR.glob(config["data"]["shard_glob"]))
SHARD_KEYS = [(p.parent.name, p.name[: -len(".json.gz")]) for p in SHARDS]

def shard_path(wildcards):
    return str(CORPUS_DIR / wildcards.source / f"{wildcards.shard}.json.gz")

def all_shard_records():
    return [f"results/data/{src}/{shard}.json" for src, shard in SHARD_KEYS]

def tokenizer_input(wildcards):
    return [str(p) for p in SHARDS]

include: "DATA_SMK"

rule train:
    input:
        manifest="results/data/manifest.json",
        tokenizer_meta="results/tokenizer/tokenizer.meta.json",
    output:
        "results/train/stand-in.txt",
    shell:
        "echo trained >> train-runs.txt && cp {input.manifest} {output}"
"""


def _workdir(root: Path, data_smk: Path) -> Path:
    write_corpus(root, {"plays": (30, 2), "code": (8, 1)})
    cfg = default_config()
    cfg["data"].update(corpus_dir="corpus", valid_fraction=0.2)
    cfg["tokenizer"].update(vocab_size=300)
    cfg["search"]["targets"] = []
    write_config(root, cfg)
    snakefile = root / "Snakefile"
    snakefile.write_text(SNAKEFILE.replace("DATA_SMK", str(data_smk)))
    return snakefile


def _runs(root: Path) -> int:
    return len((root / "train-runs.txt").read_text().splitlines())


@pytest.mark.parametrize("plain_rules", [False, True], ids=["checkpoints", "control-plain-rules"])
def test_identical_data_outputs_do_not_retrain(tmp_path, plain_rules):
    data_smk = REPO / "workflow" / "rules" / "data.smk"
    if plain_rules:
        text = (data_smk.read_text().replace("checkpoint ", "rule ")
                .replace("../scripts/", f"{REPO}/workflow/scripts/").replace("../../", f"{REPO}/"))
        data_smk = tmp_path / "data_plain.smk"
        data_smk.write_text(text)
    snakefile = _workdir(tmp_path, data_smk)
    target = "results/train/stand-in.txt"
    first = run_snakemake(tmp_path, target, snakefile=snakefile)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _runs(tmp_path) == 1
    again = run_snakemake(tmp_path, target, "--forcerun", "tokenizer", "data_manifest", snakefile=snakefile)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "data_manifest" in again.stdout + again.stderr  # the data jobs did run again
    assert _runs(tmp_path) == (2 if plain_rules else 1)

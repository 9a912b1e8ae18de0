# Config validation, grid expansion, wildcard constraints and input functions.
import os
import sys
from pathlib import Path

from snakemake.logging import logger

from archscale.config import ConfigError, read_yaml
from archscale.preflight import preflight
from archscale.workflow_support import (
    invoked_as_dry_run,
    isolated_threads,
    runtime_string,
)

try:
    # The config files as archscale reads them: a YAML error names file, line and column.
    for _path in workflow.configfiles:
        read_yaml(_path)
    # One reading of the config (schema defaults filled) and every check before any job starts:
    # schema, finite numbers, batch divisibility, names, empty scales and the plan of every grid
    # point, all problems in one message; points skipped by on_infeasible: skip are listed.
    STUDY = preflight(
        config,
        source=" + ".join(map(str, workflow.configfiles)) or "config",
        notify=lambda line: logger.info(f"archscale plan: {line}"),
    )
    PLAN = STUDY.plan
except ConfigError as exc:
    raise WorkflowError(f"config error: {exc}") from None


ARCH_IDS = PLAN.ids
TRAIN_IDS = PLAN.train_ids  # every seed of every architecture (archscale.plan.run_id)
SEARCH_TARGETS = STUDY.search_target_names()


# Finished outputs are checked, not trusted (archscale verify): a damaged or missing output of a
# finished run is restored from the copy kept at completion, else deleted and rebuilt (REBUILD
# joins the default targets: the default target never asks for final/ itself). Only the main
# process checks: jobs (SLURM's included) re-parse this file.
if workflow.is_main_process:
    from archscale.verify import find_damage, repair

    DAMAGED = find_damage("results", runs=TRAIN_IDS, archs=ARCH_IDS)
else:
    DAMAGED = []
for _damage in DAMAGED:
    logger.warning(f"archscale verify: {_damage.line()}")
if DAMAGED and not invoked_as_dry_run(sys.argv[1:]):
    REBUILD = [
        d.target
        for d in repair(
            DAMAGED, log=lambda line: logger.info(f"archscale verify: {line}")
        )
    ]
else:
    REBUILD = [d.target for d in DAMAGED if d.kept is None]


wildcard_constraints:
    arch="[A-Za-z0-9]+-L[0-9]+-d[0-9]+-h[0-9]+g[0-9]+x[0-9]+-f[0-9]+(-untied)?",
    run="[A-Za-z0-9]+-L[0-9]+-d[0-9]+-h[0-9]+g[0-9]+x[0-9]+-f[0-9]+(-untied)?(-s[0-9]+)?(-D[0-9]+[kMGT]?)?",
    source="[^/]+",
    shard="[^/]+",
    target="[A-Za-z0-9_][A-Za-z0-9_.-]*",


# ---- corpus ----------------------------------------------------------------------
CORPUS_DIR = STUDY.corpus_dir
SHARDS = sorted(CORPUS_DIR.glob(STUDY.shard_glob))
if not SHARDS:
    raise WorkflowError(
        f"data.corpus_dir: no shards matching '{STUDY.shard_glob}' under {CORPUS_DIR}; "
        "point data.corpus_dir at a Dolma-format corpus (<source>/*.json.gz)"
    )
SHARD_KEYS = [(p.parent.name, p.name[: -len(".json.gz")]) for p in SHARDS]


def shard_path(wildcards):
    return str(CORPUS_DIR / wildcards.source / f"{wildcards.shard}.json.gz")


def all_shard_records():
    return [f"results/data/{src}/{shard}.json" for src, shard in SHARD_KEYS]


def tokenizer_input(wildcards):
    """A configured tokenizer file, or the corpus shards the BPE is trained on."""
    if STUDY.tokenizer_file:
        return [STUDY.tokenizer_file]
    return [str(p) for p in SHARDS]


# ---- per-architecture parameters (a job sees only its own grid point) -------------
def arch_params(wildcards):
    return PLAN[wildcards.arch].arch.to_dict()


def run_params(wildcards):
    """Architecture of a training run ({run}: an arch id, or arch id + -s<seed>)."""
    return PLAN.of_run(wildcards.run)[0].arch.to_dict()


def train_budget(wildcards):
    """The run's token budget (and, for a branch of a multi-horizon run, its schedule)."""
    return PLAN.budget(wildcards.run)


def previous_branch(wildcards):
    """A decay branch starts after the next shorter branch of its run finished: that job
    trained (and kept) the stable phase this one continues. [] for the first or a cosine run.
    """
    previous = PLAN.train_run(wildcards.run).previous
    return [f"results/train/{previous}/metrics.json"] if previous else []


def training_recipe():
    """Training keys that change a run's result (x-identity in the schema; hardware knobs are
    read by the job at run time)."""
    return STUDY.training_recipe()


def run_recipe(wildcards):
    """The recipe of one training run: its seed replaces training.seed (the base seed's run
    has exactly the study's recipe, so adding seeds re-runs nothing)."""
    recipe = training_recipe()
    recipe["seed"] = PLAN.of_run(wildcards.run)[1]
    return recipe


def train_runtime(wildcards, attempt):
    """SLURM time limit of a training job ("90m"): the compute plan's estimate, times the
    attempt number, so a job that hit its limit resumes from its checkpoint with more time.
    """
    return runtime_string(
        PLAN.of_run(wildcards.run)[0].row(PLAN.compute)["runtime_min"] * attempt
    )


TRAIN_PRIORITY = PLAN.train_priorities()
# The data jobs gate every training job: when cores are short (a local run) they go first, ahead
# of the throughput jobs (which need no training) and of any training job.
DATA_PRIORITY = max(TRAIN_PRIORITY.values(), default=0) + 1


def train_priority(wildcards):
    """Longest first: the run's rank by estimated training FLOPs (Plan.train_priorities)."""
    return TRAIN_PRIORITY[wildcards.run]


def train_gpus(wildcards):
    """GPUs of one training job: the scale's `gpus`, else compute.gpus_per_job (0 = CPU)."""
    return PLAN.of_run(wildcards.run)[0].gpus


def final_checkpoint(wildcards):
    """The trained weights standing for an architecture: its primary run's (base seed)."""
    return f"results/train/{PLAN[wildcards.arch].primary_run_id}/final"


def throughput_workload():
    """Throughput keys that change a measurement (x-identity in the schema)."""
    return STUDY.throughput_workload()


def throughput_weights(wildcards):
    if STUDY.throughput_uses_trained_weights:
        return [final_checkpoint(wildcards)]
    return []


def throughput_threads():
    """Threads a throughput job reserves: locally every core of the run (--cores), so no
    other job runs beside a measurement; on a cluster throughput.threads (isolated_threads).
    """
    return isolated_threads(
        workflow.local_exec, workflow.resource_settings.cores, STUDY.throughput_threads
    )


def gpu_resource():
    return STUDY.gpus_per_job


# ---- cluster resources (SLURM; see profiles/slurm/) -------------------------------
def gpu_model(gpus):
    """`gpu_model` resource: compute.gpu_model for a job with GPUs, else none ("")."""
    return STUDY.gpu_model(gpus)


def throughput_gpus():
    """Throughput is measured on one GPU of the configured model (0 on a CPU plan)."""
    return min(1, gpu_resource())


def throughput_runtime(wildcards, attempt):
    return runtime_string(STUDY.throughput_runtime_min * attempt)


def throughput_mem_mb():
    """Memory of a throughput job: one GPU's share of a training job's (all of it on CPU)."""
    return int(STUDY.mem_mb_per_job) // max(1, gpu_resource())


def cpus_per_gpu():
    """CPU cores per GPU of GPU jobs (--cpus-per-gpu; jobs without GPUs use their threads)."""
    return STUDY.cpus_per_gpu


def slurm_partition():
    """Partition of GPU jobs: compute.partition, else $SBATCH_PARTITION, else the default."""
    return STUDY.slurm_partition(os.environ.get("SBATCH_PARTITION", ""))


def slurm_account():
    """Account of GPU jobs: compute.account, else $SBATCH_ACCOUNT, else the user's default."""
    return STUDY.slurm_account(os.environ.get("SBATCH_ACCOUNT", ""))


def job_gpu_model(gpus):
    """gpu_model of a job whose GPUs are a number or a function of the wildcards."""
    if not callable(gpus):
        return gpu_model(gpus)

    def model(wildcards):
        return gpu_model(gpus(wildcards))

    return model


def gpu_job_resources(runtime, gpus, **extra):
    """Resources shared by the GPU jobs (train, throughput, search measurements, evaluate),
    runtime as a function of wildcards and attempt returning a unit string ("90m"), GPUs (an
    int or a function of wildcards) and their model, CPUs per GPU, SLURM partition and
    account; ``extra`` adds resources (mem_mb, exclusive) or drops one (None)."""
    res = dict(
        runtime=runtime,
        gpu=gpus,
        gpu_model=job_gpu_model(gpus),
        cpus_per_gpu=cpus_per_gpu(),
        slurm_partition=slurm_partition(),
        slurm_account=slurm_account(),
    )
    res.update(extra)
    return {k: v for k, v in res.items() if v is not None}


# ---- collections -----------------------------------------------------------------
def all_metrics():
    return expand("results/train/{run}/metrics.json", run=TRAIN_IDS)


def all_throughput():
    return expand("results/throughput/{arch}.json", arch=ARCH_IDS)


# ---- export and downstream evaluation (export.smk, evaluate.smk) -----------------
def selected_architectures(section):
    """Architecture ids of <section>.architectures ("all", names, ids or scales)."""
    from archscale.evaluate import EvaluationError, select_architectures

    try:
        return select_architectures(
            STUDY.selected(section),
            [PLAN[a].arch for a in ARCH_IDS],
            key=f"{section}.architectures",
        )
    except EvaluationError as exc:
        raise WorkflowError(f"config error: {exc}") from None


def all_eval_records():
    """results/eval/{arch}.json of evaluate.architectures, an optional input of the
    aggregate; [] when evaluate.enabled is off."""
    if not STUDY.evaluate_enabled:
        return []
    return expand("results/eval/{arch}.json", arch=selected_architectures("evaluate"))


def all_exports():
    return expand("results/export/{arch}", arch=selected_architectures("export"))


def export_params():
    """Export settings that change the exported files (verify is a check, not part of them)."""
    return STUDY.export_params()


def evaluate_spec():
    """What changes an evaluation's result (batch size, device, threads do not)."""
    return STUDY.evaluate_spec()


def evaluate_task_files(wildcards):
    """Files of the local tasks evaluated: editing a task re-runs its evaluations."""
    from archscale.eval_tasks import EvaluationError, local_task_files

    tasks, include_path = STUDY.evaluate_tasks
    try:
        return local_task_files(tasks, include_path)
    except EvaluationError as exc:
        raise WorkflowError(f"config error: {exc}") from None


def evaluate_runtime(wildcards, attempt):
    return runtime_string(STUDY.evaluate_runtime_min * attempt)


def get_final_output():
    return [
        "results/plan/plan.parquet",
        "results/runs.parquet",
        "results/fit/conditional.json",
        "results/fit/validation.parquet",
        *expand("results/search/{target}/result.json", target=SEARCH_TARGETS),
        *lifetime_output(),
        "results/report/index.json",
        *science_plan_output(),
        *REBUILD,
    ]


def lifetime_output():
    """results/search/{target}/lifetime.json when search.lifetime.tokens is set, else []."""
    if STUDY.lifetime_tokens is None:
        return []
    return expand("results/search/{target}/lifetime.json", target=SEARCH_TARGETS)


def science_plan_output():
    """results/plan/science.json when the science plan is on (plan.science.law set), else []."""
    return ["results/plan/science.json"] if STUDY.science_law else []


def science_law_input(wildcards):
    """The prior law's fit file when plan.science.law is a path (a named law has no file)."""
    from archscale.law.laws import NAMED_LAWS

    law = STUDY.science_law
    return [] if not law or law in NAMED_LAWS else [law]

# Lifetime cost per search target (archscale.search.lifetime): the (N, D, shape) that meets the
# loss target at the lowest training plus serving cost for search.lifetime.tokens of demand, and
# the crossover demands of the baseline, Panda, Surefire and that pick. Off while tokens is null.
from archscale.search.lifetime import LifetimeError, settings_from_config

try:
    # the search package reads its own settings
    LIFETIME = settings_from_config(STUDY.config)
except LifetimeError as exc:
    raise WorkflowError(f"config error: search.lifetime: {exc}") from None


rule search_lifetime:
    input:
        result="results/search/{target}/result.json",
        fit="results/fit/conditional.json",
        chinchilla="results/fit/chinchilla.json",
        cost_model="results/throughput/cost_model.json",
        runs="results/runs.parquet",
        throughput=all_throughput(),
    output:
        "results/search/{target}/lifetime.json",
    log:
        "logs/search/{target}/lifetime.log",
    conda:
        "../../environment.yml"
    params:
        target=search_target,
        settings=LIFETIME.to_dict() if LIFETIME else {},
        form=SEARCH_SETTINGS.form,
    script:
        "../scripts/search_lifetime.py"

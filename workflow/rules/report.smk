# Figures, tables and the honest summary of the study; `snakemake --report results/report.html`
# gathers the files declared with report(...) below.


rule report:
    input:
        plan="results/plan/plan.parquet",
        runs="results/runs.parquet",
        conditional="results/fit/conditional.json",
        validation="results/fit/validation.parquet",
        curves=expand("results/train/{run}/curve.parquet", run=TRAIN_IDS),
        throughput=all_throughput(),
        cost_model="results/throughput/cost_model.json",
        search_results=expand(
            "results/search/{target}/result.json", target=SEARCH_TARGETS
        ),
        search_pareto=expand(
            "results/search/{target}/pareto.parquet", target=SEARCH_TARGETS
        ),
        # The search's interleaved rounds: the answer table's speed intervals.
        search_throughput=expand(
            "results/search/{target}/throughput.json", target=SEARCH_TARGETS
        ),
        science=science_plan_output(),
        lifetime=lifetime_output(),
    output:
        index="results/report/index.json",
        findings=report(
            "results/report/findings.html",
            caption="../report/findings.rst",
            category="1 Summary",
        ),
        chosen=report(
            "results/report/chosen.html",
            caption="../report/chosen.rst",
            category="1 Summary",
        ),
        loss_vs_d=report(
            "results/report/loss_vs_d.png",
            caption="../report/loss_vs_d.rst",
            category="2 Scaling law",
        ),
        loss_vs_r=report(
            "results/report/loss_vs_r.png",
            caption="../report/loss_vs_r.rst",
            category="2 Scaling law",
        ),
        validation=report(
            "results/report/validation.png",
            caption="../report/validation.rst",
            category="2 Scaling law",
        ),
        throughput=report(
            "results/report/throughput.png",
            caption="../report/throughput.rst",
            category="3 Inference",
        ),
        pareto=report(
            "results/report/pareto.png",
            caption="../report/pareto.rst",
            category="4 Search",
        ),
        loss_curves=report(
            "results/report/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="5 Training",
        ),
        plan=report(
            "results/report/plan.html",
            caption="../report/plan.rst",
            category="5 Training",
        ),
    log:
        "logs/report.log",
    conda:
        "../../environment.yml"
    params:
        title=STUDY.report_title,
        batch_size=STUDY.report_batch_size,
    script:
        "../scripts/report.py"

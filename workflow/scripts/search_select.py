"""Rule search_select: GQA walk on measured throughput, Panda and Surefire -> result.json, pareto.parquet."""

import sys
import traceback

with open(snakemake.log[0], "w") as log:
    sys.stderr = sys.stdout = log
    try:
        from archscale.io import write_json, write_parquet
        from archscale.search import select_from_files
        from archscale.cli.search import print_result

        result, pareto = select_from_files(snakemake.input.candidates, snakemake.input.space, snakemake.input.measured)
        write_parquet(snakemake.output.pareto, pareto)
        write_json(snakemake.output.result, result)
        print_result(result, pareto, out=log)
    except Exception:
        traceback.print_exc()
        sys.stderr = sys.__stderr__
        raise

"""read_table: CSV, Parquet, JSON lines and JSON records by extension; clear errors naming the file."""

import json

import pandas as pd
import pytest

from archscale.law import TableError, read_table

DF = pd.DataFrame({"N": [1e8, 2e8], "D": [1e10, 2e10], "loss": [3.1, 2.9]})


@pytest.mark.parametrize("ext", ["csv", "parquet", "jsonl", "json", "json-object"])
def test_every_format_reads_the_same_table(tmp_path, ext):
    path = tmp_path / f"runs.{ext.split('-')[0]}"
    if ext == "csv":
        DF.to_csv(path, index=False)
    elif ext == "parquet":
        DF.to_parquet(path)
    elif ext == "jsonl":
        DF.to_json(path, orient="records", lines=True)
    elif ext == "json":
        path.write_text(json.dumps(DF.to_dict("records")))
    else:
        path.write_text(json.dumps({"runs": DF.to_dict("records")}))
    pd.testing.assert_frame_equal(read_table(path), DF, check_dtype=False)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(TableError, match=r"runs\.xlsx: unknown table format '.xlsx'"):
        read_table(tmp_path / "runs.xlsx")
    with pytest.raises(TableError, match=r"missing\.csv: no such file"):
        read_table(tmp_path / "missing.csv")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows_": []}))
    with pytest.raises(TableError, match=r"bad\.json: a JSON object must hold the records"):
        read_table(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(TableError, match=r"bad\.json: expected a JSON list of records"):
        read_table(bad)
    pq = tmp_path / "broken.parquet"
    pq.write_text("not parquet")
    with pytest.raises(TableError, match=r"broken\.parquet: cannot read as parquet"):
        read_table(pq)

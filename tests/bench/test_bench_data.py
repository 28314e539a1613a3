import json

from mmadapter.cli import main


def test_bench_data_reports_positive_throughput(capsys) -> None:
    assert main(["bench", "data", "--samples", "16", "--batches", "2", "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["samples_per_s"] > 0 and result["tokens_per_s"] > result["samples_per_s"]
    assert result["batches"] == 2 and result["workers"] == 0

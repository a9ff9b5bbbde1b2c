"""`python -m pipeline.models summary` prints the table a reader checks against the paper."""

from __future__ import annotations

from pipeline.models.__main__ import main


def test_summary_cli_totals(capsys):
    assert main(["summary", "--size", "224"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "features.inception_4e (concat)" in out and "1056x7x7" in out
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1:] == ["11,285,224", "2,032,600,064"]
    assert lines[-1] == "parameters 11.29 M, multiply-adds 2.03 G"


def test_summary_cli_variants(capsys):
    assert main(["summary", "--size", "96", "--no-bn", "--num-classes", "10"]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines()
                 if line.startswith("total"))
    # 1024 x 990 fewer classifier weights and 990 fewer biases than 1000 classes.
    assert total.split()[1] == f"{11_275_208 - 1024 * 990 - 990:,}"

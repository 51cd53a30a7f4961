"""The committed default results (outputs/default/) agree with themselves: findings follow from the tables."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from resurface.memorization import memorization_verdict
from resurface.proxies import correlations, proxy_verdict
from resurface.stats import transfer_verdict
from resurface.transfer import headline

OUT = Path(__file__).resolve().parents[1] / "outputs" / "default"


def _finding(name):
    return json.loads((OUT / "findings" / f"{name}.json").read_text())


def test_committed_outputs_are_complete():
    for name in ("00_zoo", "01_transfer", "02_proxies", "03_memorization"):
        assert (OUT / f"{name}.ipynb").exists(), name
    for name in ("01_transfer", "02_proxies", "03_memorization"):
        assert _finding(name)["verdict"] in {"supported", "not supported", "inconclusive"}
    assert (OUT / "REPORT.md").exists()


def test_transfer_finding_follows_from_the_table():
    f = _finding("01_transfer")
    runs = headline(pd.read_csv(OUT / "tables" / "transfer.csv"))
    again = transfer_verdict({r: g["headline_delta"].tolist() for r, g in runs.groupby("relation")}, seed=0)
    assert again["verdict"] == f["verdict"]
    for rel, v in again["per_relation"].items():
        assert v["mean"] == pytest.approx(f["per_relation"][rel]["mean"])


def test_proxies_finding_follows_from_the_table():
    f = _finding("02_proxies")
    df = pd.read_csv(OUT / "tables" / "proxies.csv")
    corr = correlations(df, seed=0)
    assert proxy_verdict(corr, len(df))["verdict"] == f["verdict"]
    for score, c in corr.items():
        assert c["spearman"]["r"] == pytest.approx(f["correlations"][score]["spearman"]["r"])


def test_memorization_finding_follows_from_the_table():
    f = _finding("03_memorization")
    runs = pd.read_csv(OUT / "tables" / "memorization_runs.csv")
    again = memorization_verdict(runs, f["extraction_before"], seed=0)
    assert again["verdict"] == f["verdict"]

"""Finding 2 (notebook 03): do intrinsic proxies predict which corpora help?"""
from __future__ import annotations

import numpy as np
import pandas as pd

from resurface.analysis.verdicts.judging import Thresholds, _z


PROXY_RULE = (
    "Finding 2. One point per (student, source, temperature): the headline delta in the primary score "
    "(SCORE_RULE) averaged over seeds, against each "
    "score computed before fine-tuning on the seed-0 corpus. Association = Spearman correlation with the "
    "student, the relation and the temperature partialled out (ranks residualised on their c indicator "
    "columns). PRIMARY scores, the paper's two intrinsic proxies: `loglik_per_token` (per-token log-likelihood "
    "of the corpus under the student) and `centroid_similarity` (cosine of the corpus's and the benchmark's "
    "embedding centroids). SECONDARY scores, reported and judged the same way but never deciding the verdict: "
    "`nn_similarity` and `loglik_per_char` (intrinsic) and `gradient_alignment` (relational). CI: percentile "
    "bootstrap that resamples corpora, each with all its points (a source and a temperature give one corpus, "
    "shared by every student), at level 1 - alpha/k for each of the k primary scores (Bonferroni) and 1 - alpha "
    "for a secondary one. A score PREDICTS when its CI lies entirely above +rho0 or below -rho0; it FAILS TO "
    "PREDICT when its CI lies inside (-rho0, +rho0) (equivalence) and there are at least N_needed corpora; it is "
    "INCONCLUSIVE otherwise. Points that share a corpus are not independent, so the counts below are of corpora "
    "(n), not points: N_needed is the fewest corpora n for which, at rho = 0, the Fisher-z interval "
    "tanh(+-z[1 - a/2] / sqrt(n - 3 - c)) at the score's level 1 - a lies inside (-rho0, +rho0): with fewer "
    "corpora equivalence is unreachable, and the score is reported as such. MDE = tanh((z[1 - a/2] + z[power]) "
    "/ sqrt(n - 3 - c)). rho0 is stated in params. `supported` when every primary score fails to predict; `not "
    "supported` when any primary score predicts; `inconclusive` otherwise; the reason is stated. If finding 1's "
    "instrument check fails (INSTRUMENT_RULE: the positive controls did not register the gain of real data at "
    "this budget), the verdict is `inconclusive`: the benchmark could not have seen a corpus that helps.")


PROXY_NO_INSTRUMENT = ("the instrument did not detect the gain of real data at this budget (finding 1's instrument "
                       "check)")


PROXY_ROLES = ("primary", "secondary")


def _rank(v: np.ndarray) -> np.ndarray:
    return pd.Series(v).rank(method="average").to_numpy(float)


def partial_spearman(x: np.ndarray, y: np.ndarray, covariates: np.ndarray) -> float:
    """Spearman correlation of x and y after regressing both ranks on the covariates (with an intercept)."""
    c = np.column_stack([np.ones(len(x)), covariates]) if covariates.size else np.ones((len(x), 1))
    rx, ry = _rank(x), _rank(y)
    ex = rx - c @ np.linalg.lstsq(c, rx, rcond=None)[0]
    ey = ry - c @ np.linalg.lstsq(c, ry, rcond=None)[0]
    den = np.sqrt((ex @ ex) * (ey @ ey))
    return float(ex @ ey / den) if den > 1e-12 else float("nan")


def _dummies(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    parts = []
    for col in cols:
        levels = sorted(df[col].astype(str).unique())
        parts += [(df[col].astype(str) == lv).to_numpy(float) for lv in levels[1:]]
    return np.column_stack(parts) if parts else np.empty((len(df), 0))


def equivalence_points(level: float, rho0: float, n_covariates: int) -> int:
    """PROXY_RULE's N_needed: the fewest corpora n for which, at rho = 0, the Fisher-z interval at `level`,
    tanh(+-z[1 - a/2] / sqrt(n - 3 - c)), lies inside (-rho0, +rho0). With fewer, no data can show equivalence."""
    z = _z(1 - (1 - level) / 2)
    dof = int(np.floor((z / np.arctanh(rho0)) ** 2)) + 1  # the smallest dof with z / sqrt(dof) < atanh(rho0)
    return dof + 3 + int(n_covariates)


def correlation_mde(level: float, power: float, n: int, n_covariates: int) -> float:
    """PROXY_RULE's MDE: the correlation detectable with `power` by a CI at `level` (Fisher z, n - 3 - c dof)."""
    dof = max(1, n - 3 - int(n_covariates))
    return float(np.tanh((_z(1 - (1 - level) / 2) + _z(power)) / np.sqrt(dof)))


def _clusters(d: pd.DataFrame, cols: list[str]) -> list[np.ndarray]:
    """The row positions of each cluster (rows equal on `cols`); without `cols`, every row is its own."""
    if not cols:
        return [np.array([i]) for i in range(len(d))]
    ids = d.groupby(cols, sort=True, dropna=False).ngroup().to_numpy()
    return [np.flatnonzero(ids == g) for g in range(ids.max() + 1)] if len(d) else []


def proxy_association(points: pd.DataFrame, score: str, outcome: str, covariates: list[str], th: Thresholds,
                      level: float | None = None, clusters: list[str] | None = None) -> dict:
    """One score under PROXY_RULE: the partial Spearman correlation with `outcome`, its percentile bootstrap CI
    at `level` (default 1 - alpha), the MDE, the points equivalence needs (N_needed) and the outcome.

    `clusters`: the columns naming the corpus a point's score and delta come from (source, temperature); the
    bootstrap resamples whole clusters with all their points. Without them every point is its own cluster."""
    level = 1 - th.alpha if level is None else float(level)
    clusters = list(clusters or [])
    d = points[list(dict.fromkeys([score, outcome, *covariates, *clusters]))].dropna()
    n = len(d)
    cov = _dummies(d, covariates)
    members = _clusters(d, clusters)
    q = (1 - level) / 2
    n_eff = len(members)  # independent units: corpora, not the points that share them
    n_needed = equivalence_points(level, th.proxy_rho0, cov.shape[1])
    mde = correlation_mde(level, th.power, n_eff, cov.shape[1])  # detectable with the stated power
    out = {"n": n, "n_clusters": n_eff, "level": level, "rho": float("nan"), "ci_low": float("nan"),
           "ci_high": float("nan"), "mde": mde, "n_needed": n_needed, "equivalence_reachable": n_eff >= n_needed}
    if n < 6:
        return {**out, "outcome": "inconclusive", "why": f"only {n} points"}
    x, y = d[score].to_numpy(float), d[outcome].to_numpy(float)
    rho = partial_spearman(x, y, cov)
    rng = np.random.default_rng(th.seed)
    singletons = len(members) == n
    boot = np.empty(th.bootstrap)
    for b in range(th.bootstrap):
        pick = rng.integers(0, len(members), len(members))
        i = pick if singletons else np.concatenate([members[g] for g in pick])
        boot[b] = partial_spearman(x[i], y[i], cov[i])
    boot = boot[np.isfinite(boot)]
    if len(boot) < 20 or not np.isfinite(rho):  # the covariates leave (almost) nothing to correlate
        return {**out, "rho": rho, "outcome": "inconclusive",
                "why": "the covariates leave nothing to correlate"}
    lo, hi = float(np.quantile(boot, q)), float(np.quantile(boot, 1 - q))
    r0 = th.proxy_rho0
    if lo > r0 or hi < -r0:
        outcome_, why = "predicts", f"its CI lies beyond +-{r0:g}"
    elif n_eff < n_needed:
        outcome_, why = "inconclusive", f"equivalence unreachable with {n_eff} corpora: it needs {n_needed}"
    elif -r0 < lo and hi < r0:
        outcome_, why = "fails to predict", f"its CI lies inside (-{r0:g}, +{r0:g})"
    else:
        outcome_, why = "inconclusive", f"its CI straddles +-{r0:g}"
    return {**out, "rho": rho, "ci_low": lo, "ci_high": hi, "outcome": outcome_, "why": why}


def proxy_verdict(points: pd.DataFrame, scores: dict[str, tuple[str, str]], outcome: str, covariates: list[str],
                  th: Thresholds, clusters: list[str] | None = None, instrument_ok: bool = True,
                  instrument_why: str = "") -> dict:
    """Apply PROXY_RULE. `scores`: name -> (kind, role), kind 'intrinsic' or 'relational', role 'primary' (decides
    the verdict) or 'secondary' (reported). `clusters`: the columns naming a point's corpus (see
    `proxy_association`). `instrument_ok`: finding 1's instrument check (`instrument_why`: its reason)."""
    roles = {s: tuple(v) for s, v in scores.items()}
    bad = sorted(s for s, v in roles.items() if len(v) != 2 or v[1] not in PROXY_ROLES)
    if bad:
        raise ValueError(f"scores {bad} need a (kind, role) with role one of {PROXY_ROLES}")
    primary = [s for s, (_, role) in roles.items() if role == "primary"]
    k = max(1, len(primary))
    levels = {"primary": 1 - th.alpha / k, "secondary": 1 - th.alpha}
    assoc = {s: {"type": kind, "role": role,
                 **proxy_association(points, s, outcome, covariates, th, levels[role], clusters)}
             for s, (kind, role) in roles.items()}
    outs = {s: assoc[s]["outcome"] for s in primary}

    def ci(s: str) -> str:
        a = assoc[s]
        return f"partial rho {a['rho']:.2f}, {100 * a['level']:g} % CI [{a['ci_low']:.2f}, {a['ci_high']:.2f}]"

    if not primary:
        verdict, why = "inconclusive", "no primary score in the table"
    elif any(o == "predicts" for o in outs.values()):
        verdict = "not supported"
        why = "; ".join(f"{s} predicts ({ci(s)}: {assoc[s]['why']})" for s, o in outs.items() if o == "predicts")
    elif all(o == "fails to predict" for o in outs.values()):
        verdict = "supported"
        why = "every primary score fails to predict: " + "; ".join(f"{s} ({ci(s)})" for s in primary)
    else:
        verdict = "inconclusive"
        why = "; ".join(f"{s}: {assoc[s]['why']}" for s, o in outs.items() if o != "fails to predict")
    out = {"verdict": verdict, "why": why, "rule": PROXY_RULE, "thresholds": th.__dict__, "associations": assoc,
           "primary": primary, "secondary": [s for s in roles if s not in primary], "bonferroni_k": len(primary),
           "levels": levels, "n_needed": max((assoc[s]["n_needed"] for s in primary), default=None),
           "covariates": covariates, "clusters": list(clusters or []), "n_points": int(len(points)),
           "instrument_ok": bool(instrument_ok), "instrument_why": instrument_why}
    if not instrument_ok:
        out.update(verdict="inconclusive", verdict_before_instrument=verdict, why_before_instrument=why,
                   why=PROXY_NO_INSTRUMENT)
    return out

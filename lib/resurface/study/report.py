"""`python -m resurface.study.report --profile NAME`: REPORT.md from a study's products, never by hand.

Reads outputs/<profile>/findings/*.json, tables/*.csv and figures/*.png and writes
outputs/<profile>/REPORT.md (and REPORT.html, the same text rendered): the paper's
claims beside this run's verdicts and numbers, the zoo, the figures with captions,
timings and the environment.
"""
from __future__ import annotations

import argparse
import json
import platform
from importlib import metadata
from pathlib import Path

import pandas as pd

from resurface.frame.paths import outputs_dir
from resurface.names import CONTROLS, SOURCE_RELATIONS
from resurface.study.pipeline import current as current_pipeline, read_provenance

CAPTIONS = {
    "zoo_loss_curves": "Pretraining loss of every zoo model against tokens seen.",
    "transfer_by_relation": "Finding 1. Mean benchmark improvement (the primary score, test items) by relation of "
                            "source to student, pooled over students; 95 % CI from the hierarchical bootstrap "
                            "(items and seeds).",
    "transfer_strength": "Finding 1. Per run: improvement against source minus student held-out bits/byte, by "
                         "relation: does relation matter beyond strength?",
    "recipe_grid": "The recipe grid (dev items): mean improvement per fine-tuning schedule and budget, per "
                   "relation and temperature.",
    "transfer_per_task": "Finding 1. Improvement per benchmark task and relation, 95 % CI.",
    "transfer_resurfacing": "Is it resurfacing? Net shift (items gained minus lost, points) per bin of the untouched "
                            "student's margin (bins fixed on dev items), per relation and control, pooled over "
                            "students (left), and each relation's excess over the controls (right); 95 % CIs.",
    "proxies_scatter": "Finding 2. Scores computed before fine-tuning against the improvement (one point per "
                       "student, source and temperature); partial Spearman ρ with 95 % bootstrap CI.",
    "memorization_before_after": "Finding 3. The canary twin before (black line, 95 % band) and after fine-tuning "
                                 "on each source (95 % CIs over sequences and seeds): exact extraction of the "
                                 "memorized held-out set, and the likelihood advantage of held-out canaries.",
    "memorization_capability_vs_drop": "Finding 3. Capability change (test items) against the relative drop of "
                                       "the memorization measure, per source (95 % CIs); dashed: the paper's 95 % "
                                       "drop; dotted: the non-inferiority margin.",
}


def _fmt_ci(d: dict | None, digits: int = 2) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{d['mean']:.{digits}f}{ci}"


def _load(out: Path, name: str) -> dict | None:
    p = out / "findings" / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _num(v, spec: str = "+.2f") -> str:
    return "n/a" if v is None else format(v, spec)  # NaN is written to JSON as null


def _cmp(c: dict, digits: int = 2) -> str:
    return (f"{_num(c['estimate'], f'+.{digits}f')} [{_num(c['lower'], f'+.{digits}f')}, "
            f"{_num(c['upper'], f'+.{digits}f')}], MDE {_num(c['mde'], f'.{digits}f')}: {c['outcome']}")


SCORE_UNITS = {"accuracy": "Δ accuracy points", "logloss": "log-loss gain in nats (+ = better)"}
SCORE_DIGITS = {"accuracy": 2, "logloss": 4}  # a few tenths of a point; a few thousandths of a nat


def _score(*found: dict | None) -> str:
    """The primary score (SCORE_RULE) the findings were judged on; accuracy for findings that predate the choice."""
    return next((f["score"] for f in found if f and f.get("score")), "accuracy")


def verdict_rows(out: Path) -> list[dict]:
    rows = []
    f1, f2, f3 = _load(out, "02_transfer"), _load(out, "03_proxies"), _load(out, "04_memorization")
    if f1:
        rel = {r["relation"]: r for r in f1["per_relation"] if r["student"] == "pooled"}
        digits = SCORE_DIGITS[_score(f1)]
        nums = "; ".join(f"{r}: {_fmt_ci(rel.get(r), digits)}" for r in SOURCE_RELATIONS if r in rel)
        comps = "; ".join(f"{k.replace('_', ' ')} {_cmp(c, digits)}" for k, c in f1["pooled"].items())
        why = f" ({f1['why']})" if f1.get("why") else ""
        rows.append({"finding": "1. Utility is relational", "paper": f1["claim"], "verdict": f1["verdict"] + why,
                     "numbers": f"pooled mean {SCORE_UNITS[_score(f1)]} (test items) [95 % CI]: {nums}. Comparisons "
                                f"(one-sided bounds, Bonferroni): {comps}. Recipe: {f1['recipe']['schedule']}, "
                                f"{f1['recipe']['budget']} tokens; headline tasks: {', '.join(f1['headline_tasks'])}"})
    if f2:
        nums = "; ".join(f"{k}: partial ρ={_num(v['rho'], '.2f')} [{_num(v['ci_low'], '.2f')}, "
                         f"{_num(v['ci_high'], '.2f')}] ({v['outcome']})"
                         for k, v in f2["associations"].items())
        why = f" ({f2['why']})" if f2.get("why") else ""
        rows.append({"finding": "2. Intrinsic proxies fail", "paper": f2["claim"], "verdict": f2["verdict"] + why,
                     "numbers": f"over {f2['n_points']} (student, source, temperature) points, equivalence band "
                                f"±{f2['thresholds']['proxy_rho0']}: {nums}"})
    if f3:
        d = f3.get("design", {})
        if d.get("natural_scan_of"):  # real weights: no twin, famous text scanned for what the student memorized
            parts = [f"natural memorization of `{d['natural_scan_of']}`: {d['documents']} {d['source']} documents, "
                     f"{d['windows']} windows scanned; memorized (32/32, non-overlapping) dev {d['memorized_dev']}, "
                     f"held-out {d['memorized_heldout']} (the rule needs {f3.get('min_memorized', 'n/a')})"]
        elif d.get("memorized_evals_of"):  # Hub students: the sequences Pythia is known to have memorized
            parts = [f"`{d['source']}` ({', '.join(d['splits'])}): {', '.join(map(str, d['sequences']))} sequences; "
                     f"judged on `{d['measured_on']}`; gate (own samples in matches) "
                     f"{_num(100 * f3['gate_share'], '.3f')} %; memorized held-out sequences {f3['n_memorized']}"]
        else:
            parts = [f"canary twin `{d.get('twin')}`: {d.get('copies')} copies = "
                     f"{_num(100 * d.get('canary_share', 0), '.2f')} % of its pretraining tokens; gate (own samples "
                     f"in canary matches) "
                     f"{_num(100 * f3['gate_share'], '.3f')} %; memorized held-out sequences {f3['n_memorized']}"]
        for name in ("primary", "secondary"):
            v = f3.get(name)
            if not v:
                continue
            s = v["per_source"].get(d.get("twin"), {}) if d.get("twin") else {}
            ctrl = "; ".join(f"{src} drop {_num(r['relative_drop'], '.2f')} [{_num(r['drop_ci'][0], '.2f')}, "
                             f"{_num(r['drop_ci'][1], '.2f')}]" for src, r in v["per_source"].items()
                             if r["relation"] in CONTROLS)
            if s:
                parts.append(f"{name} ({v['measure']}, {v['verdict']}): before {_num(v['before'], '.3f')}, after "
                             f"self-training {_num(s['after'], '.3f')} [{_num(s['after_ci'][0], '.3f')}, "
                             f"{_num(s['after_ci'][1], '.3f')}], relative drop {_num(s['relative_drop'], '.2f')} "
                             f"[{_num(s['drop_ci'][0], '.2f')}, {_num(s['drop_ci'][1], '.2f')}], Δ accuracy "
                             f"{_num(s['capability']['estimate'])} [{_num(s['capability_ci'][0])}, "
                             f"{_num(s['capability_ci'][1])}], MDE {_num(s['capability']['mde'], '.2f')}: "
                             f"{s['capability']['outcome']}; controls: {ctrl}"
                             + (f" ({v['attribution']})" if v.get("attribution") else ""))
            else:
                parts.append(f"{name} ({v['measure']}, {v['verdict']}): {v['why']}")
        rows.append({"finding": "3. Capability and memorization decouple", "paper": f3["claim"],
                     "verdict": f3["verdict"] + (f" ({f3['why']})" if f3.get("why") else ""),
                     "numbers": ". ".join(parts)})
    return rows


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def latex_table(df: pd.DataFrame, name: str = "") -> str:
    """A booktabs tabular of `df` (numbers right-aligned to 4 significant digits, text left), ready for
    \\input{} in a paper; requires \\usepackage{booktabs}."""
    import numbers
    cols = list(df.columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols]

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "--"
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and not float(v).is_integer():
            return f"{v:.4g}"
        return _latex_escape(str(v))

    lines = [f"% {name}: written by resurface from tables/{name}.csv; do not edit by hand"] if name else []
    lines += [r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}", r"\toprule",
             " & ".join(_latex_escape(str(c)) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _table_md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(lines)


def environment() -> dict:
    pk = {}
    for name in ("torch", "transformers", "datasets", "lm_eval", "sentence-transformers", "papermill"):
        try:
            pk[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    import os
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = None
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not stop the report
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "gpu": gpu, "packages": pk}


def notebooks_as_html(out: Path) -> list[Path]:
    """Each executed notebook also as a self-contained HTML page beside REPORT.html (readable without Jupyter)."""
    import nbformat
    from nbconvert import HTMLExporter
    exporter = HTMLExporter()
    written = []
    for nb in sorted(out.glob("[0-9][0-9]_*.ipynb")):
        body, _ = exporter.from_notebook_node(nbformat.read(nb, as_version=4))
        html = nb.with_suffix(".html")
        html.write_text(body, encoding="utf-8")
        written.append(html)
    return written


def figures_in_order(out: Path) -> list[tuple[Path, str]]:
    """The run's figures with the notebook that drew each, in the pipeline's order (finding by finding); a
    figure no notebook declares (left by an older version) is not shown."""
    pipe = current_pipeline()
    if pipe is None:
        return [(f, "?") for f in sorted((out / "figures").glob("*.png"))] if (out / "figures").exists() else []
    return [(out / f"{p}.png", step.name) for step in pipe.steps.values() for p in step.writes + step.may_write
            if p.startswith("figures/") and (out / f"{p}.png").exists()]


def _what_this_run_has(out: Path) -> str:
    """How much of that design this profile's run has, read from its products (a profile may run part of the
    study, or lack what the design asks for: real weights have no capability axis, one source per relation)."""
    f0, f1r, f1 = (_load(out, n) for n in ("00_zoo_checks", "01_recipe", "02_transfer"))
    record = read_provenance(out)
    ran = ", ".join(p.stem + (f" (borrowed from `{record[p.stem]['borrowed_from']}`)"
                              if record.get(p.stem, {}).get("borrowed_from") else "")
                    for p in sorted(out.glob("[0-9][0-9]_*.ipynb")))
    said = [f"What this run has of it: notebooks {ran}"]
    if f0 is not None:
        said.append("a capability axis" if f0.get("capability_axis") else
                    "no capability axis (no checkpoints: every task with headroom counts)")
    if f1r and "headline_ok" in f1r:
        said.append("headline tasks the controls moved on dev items" if f1r["headline_ok"] else
                    "no task the controls moved on dev items (every task kept, HEADLINE_RULE)")
    if f1:
        pooled = [r for r in f1.get("per_relation", []) if r["student"] == "pooled"]
        said.append("sources per relation: " + ", ".join(f"{r['relation']} {r.get('n_sources', '?')}" for r in pooled))
        inst = f1.get("instrument")
        said.append(f"instrument check {'passed' if inst and inst.get('passed') else 'not passed'}" if inst
                    else "no instrument check")
    else:
        said.append("no finding-1 matrix (findings 1 and 2 are not judged here)")
    return "; ".join(said) + "."


def _machine_line(out: Path) -> str:
    """The machine this report's run was measured on (the notebooks' wall times are in the Timings section)."""
    env = environment()
    return (f"Measured on: {env['cpu']}, {env['cpus']} cores" + (f", GPU {env['gpu']}" if env["gpu"] else ", no GPU")
            + f"; Python {env['python']}, torch {env['packages'].get('torch', '?')}.")


def _stale_notice(out: Path) -> list[str]:
    """Findings written before the instrument check existed were judged by earlier rules: say so, above them."""
    f1 = _load(out, "02_transfer")
    if f1 is None or "instrument" in f1:
        return []
    return ["**These findings were computed by an earlier version of the rules** (without the instrument check, "
            "the hierarchical bootstrap over sources and students, and `not estimable`), and its executed notebooks "
            "ran an earlier version of the notebooks; the design text above describes the current rules. Re-run "
            "the profile to judge its results by them.", ""]


def _csv(out: Path, name: str) -> pd.DataFrame | None:
    f = out / "tables" / f"{name}.csv"
    return pd.read_csv(f) if f.exists() and f.stat().st_size > 1 else None  # an empty table is saved as no columns


def secondary_score_section(second: dict) -> list[str]:
    """Finding 1 on the secondary score (SCORE_RULE), with its own instrument check: for the embedded profiles
    this is accuracy, the paper's measure, so a reader sees whether the controls registered there too."""
    unit = SCORE_UNITS.get(second["score"], second["score"])
    inst = second.get("instrument") or {}
    controls = pd.DataFrame(inst.get("controls", {})).T
    pooled = pd.DataFrame(second.get("pooled", {})).T
    rel = pd.DataFrame(second.get("per_relation", []))
    parts = ["", f"### Finding 1 on the secondary score: {second['score']} ({unit})", "",
             f"**{second['verdict']}**" + (f" ({second['why']})" if second.get("why") else "") + "."]
    if len(controls):
        keep = [c for c in ("estimate", "lower", "mde", "outcome", "why") if c in controls]
        parts += ["", "Instrument check on this score:", "", _table_md(controls[keep].reset_index(names="control"))]
    if len(rel) and "student" in rel:
        parts += ["", "Per relation, pooled over students:", "", _table_md(rel[rel["student"] == "pooled"])]
    if len(pooled):
        keep = [c for c in ("estimate", "lower", "upper", "mde", "outcome", "why") if c in pooled]
        parts += ["", "Comparisons:", "", _table_md(pooled[keep].reset_index(names="comparison"))]
    return parts


def memorization_section(out: Path) -> list[str]:
    """Finding 3 in full, from notebook 04's products: the verdict, what was there to forget, extraction and the
    likelihood advantage before and after per source with CIs and the capability change, what planting cost
    the twin, the advantage taken apart, and the gate canary by canary."""
    f3 = _load(out, "04_memorization")
    if not f3:
        return []
    parts = ["", "## 7 · Finding 3: memorization before and after", "",
             f"**{f3['verdict']}**" + (f" ({f3['why']})" if f3.get("why") else "") + ".", "",
             f"Memorized held-out sequences (the untouched model extracts 32/32): {f3['n_memorized']} (the rule needs "
             f"{f3.get('min_memorized', 'n/a')}); gate: {_num(100 * f3['gate_share'], '.3f')} % of the model's own "
             f"sample tokens inside a canary match (at most {_num(100 * (f3.get('primary') or {}).get('gate_max', 0.01), 'g')} %)."]
    shown = [("memorization_primary", "Exact extraction of the memorized set (primary), per source"),
             ("memorization_secondary", "Likelihood advantage of the held-out canaries (secondary, nats), per source"),
             ("memorization_planting_cost", "Where the twin starts: the untouched twin minus the model it copies "
                                            "(test items, points; for a planted twin, the whole planting run)"),
             ("memorization_nll_components", "The advantage taken apart: canary and never-planted suffix NLL "
                                             "(nats per token), their change from the untouched twin, and the share "
                                             "of planting's canary gain each source undid")]
    d = f3.get("design", {})
    if d.get("canaries"):
        repeats = d.get("repeated_passages") or []
        parts += ["", f"Planted: {d['canaries']} passages ({d.get('heldout_canaries')} held-out, the rest dev), "
                  f"{d.get('copies')} copies in all ({_num(100 * d.get('canary_share', 0), '.2f')} % of the twin's "
                  f"{d.get('pretraining_tokens')} training tokens), beside {d.get('control_passages')} never-planted "
                  "passages" + (f"; passages {', '.join(map(str, repeats))} repeat an earlier passage's tokens and "
                                "are counted once" if repeats else "") + "."]
        if d.get("planting_loss") == "suffix":  # the instrument's caveat, beside the verdict it qualifies
            parts += ["", f"Planted with each copy's first {d.get('prefix_len')} tokens (the extraction prefix) "
                      "read but left out of the loss: the twin learned to complete a passage from its prefix, not "
                      "to write one, so its own samples pass the gate by construction; such a memory is keyed to "
                      "its prefix, unlike text learned whole in pretraining, and the drops below are drops of that "
                      "kind of memory (a suffix design qualifies in the planting pilot only where its "
                      "DURABILITY_RULE shows it no less durable than a passage-trained one under the real-text "
                      "control: `outputs/bench/planting_durability.csv`)."]
    primary = f3.get("primary") or {}
    if not primary.get("per_source"):  # nothing extracted before: the secondary measure is what moves
        primary = f3.get("secondary") or primary
    per = primary.get("per_source", {})
    controls = {src: r for src, r in per.items() if r["relation"] in CONTROLS}
    if controls:  # beside the verdict: does any fine-tuning erase what was planted?
        erased = [f"{src} {_num(r['relative_drop'], '.2f')} [{_num(r['drop_ci'][0], '.2f')}, "
                  f"{_num(r['drop_ci'][1], '.2f')}]" for src, r in controls.items()]
        some = [src for src, r in controls.items() if r["drop_ci"][0] is not None and r["drop_ci"][0] > 0]
        measure = {"extracted": "extraction", "advantage": "the likelihood advantage"}.get(primary.get("measure"))
        parts += ["", "Does fine-tuning as such erase planted memories? The controls' relative drops of "
                  f"{measure or primary.get('measure')} (95 % CI): {'; '.join(erased)}: "
                  + (f"{' and '.join(some)} erase{'s' if len(some) == 1 else ''} part of them (CI above 0)."
                     if some else "no control's drop is shown above 0.")
                  + (" A drop of the advantage may be prose learnt rather than canaries forgotten: its parts are "
                     "below." if primary.get("measure") == "advantage" else "")]
        mdes = [r["capability"]["mde"] for r in per.values() if r["capability"].get("mde") is not None]
        margin = primary.get("noninferiority_points")
        if mdes and margin is not None and min(mdes) > margin:
            parts += ["", f"Capability's MDE ({_num(min(mdes), '.2f')} points at best) exceeds the non-inferiority "
                      f"margin ({_num(margin, '.2f')}): a source with no effect on capability is not expected to "
                      "be shown non-inferior here; `supported` needs one that raises capability."]
    for name, title in shown:
        t = _csv(out, name)
        if t is not None and len(t):
            parts += ["", f"{title} (table `tables/{name}.csv`):", "", _table_md(t)]
    cost = _csv(out, "memorization_planting_cost")
    if cost is not None and len(cost) and per and (cost["task"] == "headline").any():
        start = float(cost.loc[cost["task"] == "headline", "twin_minus_base"].iloc[0])
        against = "; ".join(f"{src} {_num(start + r['capability']['estimate'])}" for src, r in per.items()
                            if r["capability"].get("estimate") is not None)
        parts += ["", f"Each source's capability against `{cost['base'].iloc[0]}` rather than the twin (the twin's "
                  f"start, {_num(start)} points, plus the source's change; point estimates): {against}."]
    signs = _csv(out, "memorization_sign_tests")
    if signs is not None and len(signs):
        parts += ["", "Exact sign tests over sequences (each sequence's mean over a source's runs; ties drop out; "
                  "table `tables/memorization_sign_tests.csv`):", "", _table_md(signs)]
    g = _csv(out, "memorization_gate_per_canary")
    if g is not None and len(g):
        parts += ["", f"The gate per canary: {len(g)} canaries written by the model's own samples "
                  f"({int((g['split'] == 'heldout').sum())} held-out), the most written first (table "
                  "`tables/memorization_gate_per_canary.csv`):", "", _table_md(g.head(10))]
    kept = _csv(out, "memorization_written_vs_kept")
    if kept is not None and len(kept):
        parts += ["", "Does self-training keep what the twin writes? Extraction after each source, over the memorized "
                  "set, by whether the twin's own samples write the canary (table "
                  "`tables/memorization_written_vs_kept.csv`):", "", _table_md(kept)]
    return parts


def in_the_order_of_the_study(out: Path) -> list[str]:
    """The referee's reading order: the instrument, the recipe, finding 1 over its sources, robustness,
    resurfacing, finding 2, finding 3, each from the products that hold it."""
    parts = []
    f0, f1r, f1, f2 = (_load(out, n) for n in ("00_zoo_checks", "01_recipe", "02_transfer", "03_proxies"))
    if f1 and f1.get("instrument"):
        inst = f1["instrument"]
        parts += ["", "## 1 · The instrument check (test items)", "",
                  f"Positive controls: **{'passed' if inst['passed'] else 'not passed'}**"
                  + (f" ({inst['why']})." if inst.get("why") else ".")]
        t = _csv(out, "transfer_instrument")
        if t is not None:
            parts += ["", _table_md(t)]
    cal = (f0 or {}).get("budget_calibration")
    if cal:
        parts += ["", f"Budget calibration (notebook 00, capability axis; {SCORE_UNITS[_score(f0, f1)]}): gain per "
                  "million tokens, the expected control gain at each budget and one run's MDE.", "",
                  _table_md(pd.DataFrame(cal))]
    if f1r and f1r.get("recipes"):
        parts += ["", "## 2 · The recipe (dev documents, controls only)", "",
                  f"Chosen: `{f1r['schedule']}`, {f1r['budget']} tokens ({f1r.get('why', '')}).", "",
                  _table_md(pd.DataFrame(f1r["recipes"]))]
        if f1r.get("differences"):
            parts += ["", "Chosen recipe minus each other recipe (controls' bits/byte gain, 95 % t interval):", "",
                      _table_md(pd.DataFrame(f1r["differences"]))]
        if f1r.get("headline_gate"):
            parts += ["", f"Headline gate (dev items): headline tasks {', '.join(f1r['headline_tasks'])}"
                      + ("" if f1r.get("headline_ok") else f" ({f1r.get('headline_why')})") + ".", "",
                      _table_md(pd.DataFrame(f1r["headline_gate"]))]
    rel = _csv(out, "transfer_by_relation")
    if rel is not None:
        parts += ["", "## 3 · Finding 1 per relation (test items, primary temperature)", "",
                  _table_md(rel[rel["student"] == "pooled"])]
        strength = _csv(out, "transfer_by_strength")
        if strength is not None:
            parts += ["", "Per strength of source:", "", _table_md(strength[strength["student"] == "pooled"])]
    second = (f1 or {}).get("secondary_score")
    if second:
        parts += secondary_score_section(second)
    rob = _csv(out, "transfer_robustness")
    if rob is not None:
        if "sign_flips" in rob:
            rob = rob.assign(sign_flips=rob["sign_flips"].astype(object).where(rob["sign_flips"].notna(), "none"))
        parts += ["", "## 4 · Robustness of finding 1", "", _table_md(rob)]
        if rob["variant"].astype(str).str.endswith(" alone").any():
            parts += ["", "A seed alone gives each corpus one seed, so the replication guard makes its comparisons "
                      "`inconclusive` by construction: those rows can show a sign flip (`sign_flips`), never a "
                      "changed verdict."]
    if f1 and f1.get("resurfacing"):
        r = f1["resurfacing"]
        parts += ["", "## 5 · Is it resurfacing?", "", f"**{r['verdict']}**" + (f": {r['why']}" if r.get("why") else ""),
                  ""]
        if (out / "figures" / "transfer_resurfacing.png").exists():
            parts += ["![transfer_resurfacing](figures/transfer_resurfacing.png)", "",
                      f"*{CAPTIONS['transfer_resurfacing']}* (table `tables/transfer_resurfacing.csv`)"]
    cor = _csv(out, "proxies_correlations")
    if cor is not None:
        parts += ["", "## 6 · Finding 2: proxies, with corpora resampled together", "",
                  f"**{(f2 or {}).get('verdict', 'n/a')}**" + (f" ({f2['why']})" if f2 and f2.get("why") else ""),
                  "", _table_md(cor)]
    return parts + memorization_section(out)


def build_report(profile: str) -> Path:
    out = outputs_dir(profile)
    htmls = notebooks_as_html(out)
    parts = [f"# resurface: results of the `{profile}` profile", "",
             "Generated by `python -m resurface.study.report` from this folder's findings, tables and figures; "
             "do not edit by hand. Executed notebooks: " +
             ", ".join(f"[{p.name}]({p.name})" for p in sorted(out.glob("[0-9][0-9]_*.ipynb"))) +
             (" (as HTML: " + ", ".join(f"[{p.name}]({p.name})" for p in htmls) + ")" if htmls else "") + ".", "",
             "The design the rules ask for (README, section *A test that could come out either way*): canary-free "
             "students with replicated sources (each relation through several models), relation labels "
             "checked per student and crossed with strength, a recipe chosen on the positive controls' held-out "
             "bits/byte, headline tasks that rise along a capability axis, leave every student room to move, and "
             "that the controls, pooled over the students, move on dev items, an instrument check on test items "
             "before any relational verdict, and rules fixed before the results.", "", _what_this_run_has(out), "",
             _machine_line(out), "", *_stale_notice(out),
             "## The three claims, and what this run found", ""]
    rows = verdict_rows(out)
    if rows:
        parts += ["| finding | the paper's claim | verdict here | numbers (95 % CI) |", "|---|---|---|---|"]
        parts += [f"| {r['finding']} | {r['paper']} | **{r['verdict']}** | {r['numbers']} |" for r in rows]
        parts += ["", "Each verdict is computed from the numbers by a rule stated in its notebook before the "
                      "results (also saved in `findings/*.json`)."]
    else:  # a run of the zoo and the recipe only, which another profile borrows
        parts += ["None is judged in this run: notebooks 02-04 judge them, and it ran none of them."]
    parts += in_the_order_of_the_study(out)
    zoo = out / "tables" / "zoo_models.csv"
    if zoo.exists():
        df = pd.read_csv(zoo)
        keep = [c for c in ("name", "kind", "architecture", "parameters", "tokens_seen", "tokens_per_parameter",
                            "heldout_lineage_loss",
                            "heldout_lineage_bpb", "train_seconds") if c in df]
        parts += ["", "## The model zoo", "", _table_md(df[keep])]
    transfer = out / "tables" / "transfer.csv"
    if transfer.exists():  # the untouched students: where the benchmarks leave room to improve
        t = pd.read_csv(transfer)
        base = t.drop_duplicates(["student", "task"]).pivot_table(index="student", columns=["task", "metric"],
                                                                   values="base", aggfunc="first")
        base.columns = [f"{task} ({metric})" for task, metric in base.columns]
        parts += ["", "## The untouched students (test items)", "",
                  "Accuracy as a fraction, bits per byte for perplexity tasks; every run's change is measured "
                  "from these.", "", _table_md(base.reset_index())]
    ext = out / "tables" / "zoo_canary_extraction.csv"
    if ext.exists() and len(pd.read_csv(ext)):  # only zoos with planted canaries
        e = pd.read_csv(ext)
        piv = e[e["split"] == "heldout"].pivot_table(index="model", columns="count", values="extraction_rate")
        piv.columns = [f"count {c}" for c in piv.columns]
        parts += ["", "Held-out canary extraction of the pretrained zoo (32-token prefix, 32-token suffix):", "",
                  _table_md(piv.reset_index())]
    for name, title in (("zoo_label_checks", "Relation labels, checked per student (source − student bits/byte)"),
                        ("zoo_capability_axis", "The capability axis on dev items (the primary score)"),
                        ("zoo_headroom", "Headroom: each untouched student on dev items, against chance and ceiling "
                                         "(points)"),
                        ("recipe_grid", "The recipe grid on dev items")):
        f = out / "tables" / f"{name}.csv"
        if f.exists():
            parts += ["", f"### {title}", "", _table_md(pd.read_csv(f))]
    figs = figures_in_order(out)
    if figs:
        parts += ["", "## Figures", "", "In the order of the study; each names the notebook that drew it.", ""]
        for f, notebook in figs:
            parts += [f"![{f.stem}](figures/{f.name})", "", f"*{CAPTIONS.get(f.stem, f.stem)}* "
                      f"([PDF](figures/{f.stem}.pdf); drawn in [`{notebook}`]({notebook}.html))", ""]
    pipe = current_pipeline()
    if pipe is not None:
        from resurface.study.pipeline import flow_table
        parts += ["## How the study flows", "", "From `notebooks/pipeline.yaml`, which also orders the run.", "",
                  flow_table(pipe), ""]
    timings = out / "tables" / "timings.csv"
    if timings.exists():
        t = pd.read_csv(timings)
        by = (t.groupby(["notebook", "stage", "status"])[["seconds", "build_seconds"]].sum().round(1)
              .reset_index())
        parts += ["## Timings", "", "`seconds`: what this run spent; `build_seconds`: what building the artifacts "
                  "cost when they were made (the same for reused ones). Builds in a pool of worker processes "
                  "overlap, so their seconds add up to more than the time they took: the `notebook` rows give "
                  "each notebook's wall time.", "", _table_md(by), ""]
    params = out / "params.resolved.yaml"
    if params.exists():
        parts += ["## Parameters", "", "```yaml", params.read_text().strip(), "```", ""]
    parts += ["## Environment", "", "```json", json.dumps(environment(), indent=1), "```", ""]
    path = out / "REPORT.md"
    text = "\n".join(parts)
    path.write_text(text)
    (out / "REPORT.html").write_text(to_html(text, f"resurface: {profile}"))
    return path


_CSS = ("body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}td,th{border:1px solid #ccc;padding:.3rem .5rem;"
        "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:.7rem;"
        "overflow-x:auto;font-size:.8rem}")


def to_html(markdown_text: str, title: str) -> str:
    """The report as one HTML page (figures by relative path, so the folder stays self-contained)."""
    import html

    import markdown
    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="resurface report", description="Write outputs/<profile>/REPORT.md")
    ap.add_argument("--profile", default="default")
    args = ap.parse_args(argv)
    print(build_report(args.profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One figure style for the whole study: paper sizes, colour-blind-safe relation colours."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://matplotlib_inline", "inline")) else None
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from resurface.names import CONTROLS, RELATION_COLOURS, RELATION_LABELS, RELATIONS  # noqa: E402

SINGLE_COLUMN = 3.4  # inches, a typical two-column paper
DOUBLE_COLUMN = 7.0

RELATION_ORDER = list(RELATIONS)


LABEL_COLORS = {RELATION_LABELS[r]: c for r, c in RELATION_COLOURS.items()}


def readable_relations(df):
    """`df` with its `relation` column in words (legends show `same lineage`, not `same_lineage`) and the order
    of those words in the study's fixed relation order."""
    order = [RELATION_LABELS[r] for r in RELATION_ORDER if r in set(df["relation"])]
    return df.assign(relation=df["relation"].map(lambda r: RELATION_LABELS.get(r, r))), order


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "pdf.fonttype": 42, "ps.fonttype": 42,
                         "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 7,
                         "xtick.labelsize": 8, "ytick.labelsize": 8})


def figure(width: str = "single", aspect: float = 0.75, **kw):
    w = SINGLE_COLUMN if width == "single" else DOUBLE_COLUMN
    return plt.subplots(figsize=(w, w * aspect), constrained_layout=True, **kw)


def loss_curves(histories, title: str = "Pretraining loss"):
    """Training loss against tokens seen, one line per zoo model."""
    fig, ax = figure("single")
    sns.lineplot(data=histories, x="tokens", y="loss", hue="model", ax=ax, linewidth=1)
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("training loss (nats / token)")
    ax.set_title(title)
    return fig


def score_label(score: str, items: str = "") -> str:
    """The axis label of a headline delta in `score` (SCORE_RULE): accuracy in points, log-loss gain in nats."""
    where = f", {items}" if items else ""
    return (f"Δ accuracy{where} (points)" if score == "accuracy" else
            f"log-loss gain{where}\n(nats per item, + = better)")


def relation_deltas(summary, title: str, score: str = "accuracy"):
    """Mean delta per relation with its 95 % CI; summary rows: relation, mean, ci_low, ci_high."""
    import numpy as np
    rows = [r for r in RELATION_ORDER if r in set(summary["relation"])]
    s = summary.set_index("relation").loc[rows]
    fig, ax = figure("single", aspect=0.8)
    x = np.arange(len(rows))
    err = np.vstack([s["mean"] - s["ci_low"], s["ci_high"] - s["mean"]])
    ax.bar(x, s["mean"], color=[RELATION_COLOURS[r] for r in rows], alpha=0.85)
    ax.errorbar(x, s["mean"], yerr=np.nan_to_num(err), fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, [RELATION_LABELS[r] for r in rows], rotation=25, ha="right")
    ax.set_ylabel(score_label(score))
    ax.set_title(title)
    return fig


def per_task_deltas(table, title: str = "Per task, mean Δ with 95 % CI"):
    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = figure("double", aspect=0.32, ncols=len(tasks))
    axes = axes if hasattr(axes, "__len__") else [axes]
    order = [r for r in RELATION_ORDER if r in set(table["relation"])]
    for ax, task in zip(axes, tasks):
        d = table[table["task"] == task]
        sns.pointplot(data=d, x="relation", y="delta", order=order, hue="relation", hue_order=order,
                      palette=RELATION_COLOURS, errorbar=("ci", 95), ax=ax, legend=False, linestyle="none")
        ax.axhline(0, color="black", lw=0.6)
        unit = "points" if d["metric"].iloc[0].startswith("acc") else "bits/byte, lower-is-better flipped"
        ax.set_title(f"{task} ({d['metric'].iloc[0]})")
        ax.set_ylabel(f"Δ ({unit})")
        ax.set_xlabel("")
        ax.set_xticks(range(len(order)), [RELATION_LABELS[r] for r in order], rotation=30, ha="right")
    fig.suptitle(title, fontsize=9)
    return fig


MEASURE_LABELS = {"extracted": "exact extraction of the\nmemorized held-out set",
                  "advantage": "likelihood advantage of held-out\ncanaries (nats / token)"}


def memorization_before_after(verdicts: list[dict], title: str = "Memorization before and after fine-tuning"):
    """One panel per measure (MEMORIZATION_RULE): the untouched model's level (black line, grey band = 95 % CI)
    and each source's level after fine-tuning, with 95 % CIs over sequences and seeds."""
    import numpy as np
    fig, axes = figure("double", aspect=0.36, ncols=len(verdicts))
    axes = np.atleast_1d(axes)
    for ax, v in zip(axes, verdicts):
        ax.set_ylabel(MEASURE_LABELS.get(v["measure"], v["measure"]))
        ps = v["per_source"]
        if not ps:
            ax.text(0.5, 0.5, "the untouched model extracts no held-out\nsequence: nothing to forget", ha="center",
                    va="center", transform=ax.transAxes, fontsize=7)
            ax.set_xticks([])
            continue
        order = sorted(ps, key=lambda k: RELATION_ORDER.index(ps[k]["relation"]) if ps[k]["relation"]
                       in RELATION_ORDER else 99)
        ax.axhline(v["before"], color="black", lw=0.8, label="before (untouched)")
        lo, hi = v.get("before_ci") or [None, None]
        if lo is not None and np.isfinite(lo):
            ax.axhspan(lo, hi, color="black", alpha=0.08, lw=0)
        for x, src in enumerate(order):
            r = ps[src]
            ax.errorbar(x, r["after"], yerr=[[r["after"] - r["after_ci"][0]], [r["after_ci"][1] - r["after"]]],
                        fmt="o", capsize=2, lw=0.8, color=RELATION_COLOURS.get(r["relation"], "grey"))
        ax.set_xticks(range(len(order)), [f"{s}\n({RELATION_LABELS.get(ps[s]['relation'], ps[s]['relation'])})"
                                          for s in order], rotation=30, ha="right", fontsize=6)
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    return fig


def capability_vs_drop(verdict: dict, title: str = "Capability kept vs memorization lost"):
    """Per source: the capability delta against the relative drop of the memorization measure, with 95 % CIs;
    the claim needs points right of the 95 % line and above the non-inferiority margin."""
    import numpy as np
    fig, ax = figure("single", aspect=0.85)
    for src, r in verdict["per_source"].items():
        d, (dlo, dhi) = r["relative_drop"], r["drop_ci"]
        c, (clo, chi) = r["capability"]["estimate"], r["capability_ci"]
        if not (np.isfinite(d) and np.isfinite(c)):
            continue
        ax.errorbar(d, c, xerr=[[d - dlo], [dhi - d]], yerr=[[c - clo], [chi - c]], fmt="o", capsize=2, lw=0.8,
                    color=RELATION_COLOURS.get(r["relation"], "grey"), label=f"{src}")
    ax.legend(fontsize=6)
    ax.axhline(0, color="black", lw=0.6)
    ax.axhline(-verdict["noninferiority_points"], color="grey", lw=0.6, ls=":", label="non-inferiority margin")
    ax.axvline(verdict["target_drop"], color="grey", lw=0.6, ls="--")
    ax.set_xlabel(f"relative drop ({MEASURE_LABELS.get(verdict['measure'], verdict['measure']).replace(chr(10), ' ')})",
                  fontsize=7)
    ax.set_ylabel("Δ accuracy (points)")
    ax.set_title(title)
    return fig


def proxy_scatter(df, scores: list[str], corr: dict, title: str = "Scores before fine-tuning vs improvement",
                  score: str = "accuracy"):
    """One panel per score: score against the benchmark delta, coloured by relation; in the title the partial
    Spearman rho with its CI and, when the verdict gives them, the score's role (primary or secondary) and
    outcome."""
    fig, axes = figure("double", aspect=0.26, ncols=len(scores))
    axes = axes if hasattr(axes, "__len__") else [axes]
    df, order = readable_relations(df)
    for ax, s in zip(axes, scores):
        sns.scatterplot(data=df, x=s, y="headline_delta", hue="relation", hue_order=order, palette=LABEL_COLORS,
                        ax=ax, s=14, legend=(s == scores[-1]))
        c = corr[s]
        role = f" ({c['role']}: {c['outcome']})" if "role" in c and "outcome" in c else ""
        ax.set_title(f"{s}{role}\npartial ρ={c['rho']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}]", fontsize=7)
        ax.set_xlabel(s.replace("_", " "), fontsize=7)
        ax.set_ylabel(score_label(score) if s == scores[0] else "")
        ax.axhline(0, color="black", lw=0.5)
    if len(axes):
        axes[-1].legend(fontsize=5, loc="best")
    fig.suptitle(title, fontsize=9)
    return fig


def recipe_grid(summary, title: str = "Recipe grid on dev items: mean Δ by schedule and budget", score: str = "accuracy"):
    """One panel per budget: the mean headline delta (dev) per schedule, one marker per relation x temperature,
    with a 95 % interval from the items (the grid's runs are single seeds). A grid scored on bits/byte alone
    (`recipe.grid_scores`) shows the held-out bits/byte gain RECIPE_RULE reads instead."""
    import numpy as np
    value = "headline_delta" if summary["headline_delta"].notna().any() else "bpb_gain"
    budgets = sorted(summary["budget"].unique())
    fig, axes = figure("double", aspect=0.32, ncols=len(budgets), sharey=True)
    axes = axes if hasattr(axes, "__len__") else [axes]
    schedules = list(dict.fromkeys(summary["schedule"]))
    d = summary.copy()
    d["series"] = d["relation"] + d["temperature"].map(lambda t: "" if t != t else f" T={t:g}")
    series = sorted(d["series"].unique(), key=lambda s: (RELATION_ORDER.index(s.split(" ")[0]), s))
    width = 0.7 / max(1, len(series))
    for ax, b in zip(axes, budgets):
        for k, name in enumerate(series):
            g = d[(d["budget"] == b) & (d["series"] == name)].set_index("schedule").reindex(schedules)
            x = np.arange(len(schedules)) - 0.35 + width * (k + 0.5)
            rel = name.split(" ")[0]
            ax.errorbar(x, g[value], yerr=1.96 * g["item_se"].fillna(0), fmt="o" if "T=0" not in name
                        else "s", color=RELATION_COLOURS.get(rel, "grey"), ms=3, lw=0.8, capsize=1.5,
                        label=name.replace(rel, RELATION_LABELS.get(rel, rel), 1))
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(schedules)), schedules)
        ax.set_title(f"budget {b} student tokens")
        ax.set_xlabel("fine-tuning schedule")
        label = score_label(score, "dev items") if value == "headline_delta" else "held-out bits/byte gain (dev)"
        ax.set_ylabel(label if b == budgets[0] else "")
    axes[-1].legend(fontsize=5, bbox_to_anchor=(1.02, 1), loc="upper left", borderaxespad=0)
    fig.suptitle(title, fontsize=9)
    return fig


def strength_vs_delta(runs, title: str = "Improvement against source strength, by relation", score: str = "accuracy"):
    """Per run: source minus student held-out bits/byte (left = stronger source) against the headline delta."""
    d = runs[runs["gap_bpb"].notna() & ~runs["relation"].isin(CONTROLS)]
    fig, ax = figure("single", aspect=0.8)
    d, order = readable_relations(d)
    sns.scatterplot(data=d, x="gap_bpb", y="headline_delta", hue="relation", hue_order=order,
                    palette=LABEL_COLORS, style="student", ax=ax, s=16)
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5, ls=":")
    ax.set_xlabel("source − student held-out bits/byte (negative: stronger source)")
    ax.set_ylabel(score_label(score, "test items"))
    ax.legend(fontsize=5, bbox_to_anchor=(1.02, 1), loc="upper left", borderaxespad=0)
    ax.set_title(title)
    return fig


def resurfacing_bins(table, title: str = "Where fine-tuning's gains and losses fall, by the untouched margin",
                     scope: str = "pooled"):
    """Two panels over the four margin bins of the untouched student (wrong-far ... right-far): left, each
    relation's and control's net shift (points, gained minus lost per item of the bin) with its 95 % CI; right,
    each relation's excess over the controls. Controls are dashed. `table`: `resurfacing(...)["table"]` as a
    DataFrame (columns scope, group, bin, net_shift, ci_low, ci_high, excess, excess_ci_low, excess_ci_high)."""
    import numpy as np
    bins = ["wrong-far", "wrong-near", "right-near", "right-far"]
    d = table[table["scope"] == scope]
    groups = [g for g in RELATION_ORDER if g in set(d["group"])]
    fig, axes = figure("double", aspect=0.36, ncols=2)
    x = np.arange(len(bins))
    width = 0.5 / max(1, len(groups))
    relations = [g for g in groups if g not in CONTROLS]
    panels = [(axes[0], "net_shift", "ci_low", "ci_high", groups, "net shift vs untouched student\n(points)"),
              (axes[1], "excess", "excess_ci_low", "excess_ci_high", relations, "excess over the controls\n(points)")]
    for ax, col, lo, hi, series, ylabel in panels:
        for k, g in enumerate(series):
            s = d[d["group"] == g].set_index("bin").reindex(bins)
            xs = x - 0.25 + width * (k + 0.5)
            control = g in CONTROLS
            err = np.clip(np.nan_to_num(np.vstack([s[col] - s[lo], s[hi] - s[col]])), 0, None)
            ax.errorbar(xs, s[col], yerr=err, color=RELATION_COLOURS.get(g, "grey"), lw=0.9,
                        ls="--" if control else "-", marker="s" if control else "o", ms=3, capsize=2,
                        label=RELATION_LABELS.get(g, g) + (" (control)" if control else ""))
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(1.5, color="grey", lw=0.5, ls=":")  # the decision boundary: margin 0
        ax.set_xticks(x, bins)
        ax.set_xlabel("untouched student's margin bin")
        ax.set_ylabel(ylabel)
    axes[0].set_title("net shift per bin, 95 % CI", fontsize=8)
    axes[1].set_title("relation minus mean of controls, 95 % CI", fontsize=8)
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(title + ("" if scope == "pooled" else f" — {scope}"), fontsize=9)
    return fig

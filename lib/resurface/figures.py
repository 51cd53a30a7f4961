"""One figure style for the whole study: paper sizes, colour-blind-safe relation colours."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg") if not matplotlib.get_backend().lower().startswith(("module://matplotlib_inline", "inline")) else None
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

SINGLE_COLUMN = 3.4  # inches, a typical two-column paper
DOUBLE_COLUMN = 7.0

# Okabe-Ito, colour-blind safe; one fixed colour per relation across every figure.
RELATION_COLORS = {
    "self": "#D55E00",
    "same_lineage": "#E69F00",
    "stronger_different": "#0072B2",
    "cross_family": "#009E73",
    "real_text": "#7F7F7F",
}
RELATION_ORDER = list(RELATION_COLORS)
RELATION_LABELS = {"self": "self", "same_lineage": "same lineage", "stronger_different": "stronger, different",
                   "cross_family": "cross-family", "real_text": "real text"}


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

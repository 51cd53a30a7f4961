"""Pre-registered decision rules for the fair test (findings 1 and 2, the recipe, the zoo's checks).

Everything here is numpy only: it reads numbers that the builds produced (per-item scores, per-document
bits, per-run deltas) and returns verdicts with their effect sizes, confidence bounds and minimum
detectable effects. The rules are written out as text (the `*_RULE` strings) and printed in the notebooks
*before* the results; tests apply them to synthetic data where the right answer is known.

Three ideas run through all of it:
- **The instrument comes first.** No relational verdict is read unless the positive controls (real text,
  replay) moved the same measurement on test items (`instrument_check`).
- **Every level a claim generalises over is a source of noise.** A benchmark delta is measured on a finite set
  of items, fine-tuning seeds, sources per relation and students. Confidence bounds come from a hierarchical
  bootstrap (`hierarchical_means`) that resamples each, drawing once wherever the thing drawn is shared (one
  item resample for every run, one seed draw per corpus for every student fine-tuned on it).
- **An underpowered comparison is `inconclusive`, never a failure.** A claim `A > B` *holds* when the
  one-sided lower bound of A - B is above zero; it *fails* when the data rule out an effect that would matter
  (the upper bound below the smallest effect of interest, SESOI, stated in params before any result, with an
  MDE no larger than the SESOI), or show a significant reversal (the upper bound below zero). Every
  comparison reports its minimum detectable effect (MDE) at the stated power.

One module per step of the study, each rule's text beside the code that applies it: `judging` (one
comparison), `bootstrap`, `zoo` (notebook 00), `recipe` (01), `transfer` (finding 1), `proxies` (finding 2),
`memorization` (finding 3). This package re-exports them all, so a notebook reads `verdicts.NAME`.
"""
from resurface.analysis.verdicts.judging import (  # noqa: F401
    COMPARISON_RULE, SCORE_RULE, SCORE_KINDS, effect, score_kind, score_unit, other_score, Thresholds, _z, NOT_ESTIMABLE, _outcome, monte_carlo_se, not_estimable, judge, combine, t_quantile, t_interval)
from resurface.analysis.verdicts.bootstrap import (  # noqa: F401
    item_resampled_scores, cell_means, _inflated, hierarchical_means, bootstrap_runs, run_means, per_run_paired_se)
from resurface.analysis.verdicts.zoo import (  # noqa: F401
    LABEL_RULE, label_ok, bpb_gap, CAPABILITY_RULE, NO_CAPABILITY, without_capability, capability_axis, HEADROOM_RULE, headroom)
from resurface.analysis.verdicts.transfer import (  # noqa: F401
    TRANSFER_RULE, FINDING1_COMPARISONS, WEAKER, COMPARISON_RELATIONS, matched_strength, _finding1_comparisons, unreplicated, _replication_guard, _below_sesoi_guard, _summary_rows, _replicated, transfer_verdict, beyond_strength, INSTRUMENT_RULE, instrument_check, ROBUSTNESS_RULE, DEFINITE, variant_changes, sign_flips, robustness, finding1_verdict)
from resurface.analysis.verdicts.recipe import (  # noqa: F401
    RECIPE_RULE, choose_recipe, HEADLINE_RULE, headline_gate, budget_calibration)
from resurface.analysis.verdicts.proxies import (  # noqa: F401
    PROXY_RULE, PROXY_NO_INSTRUMENT, PROXY_ROLES, _rank, partial_spearman, _dummies, equivalence_points, correlation_mde, _clusters, proxy_association, proxy_verdict)
from resurface.analysis.verdicts.memorization import (  # noqa: F401
    MEMORIZATION_RULE, exact_sign_test, source_boot, memorization_verdict, paired_sign_tests)
from resurface.names import CONTROLS, SOURCE_RELATIONS as RELATIONS  # noqa: F401 (the rules' vocabulary)

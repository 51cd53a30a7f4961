"""Build the zoo and the transfer matrix of a profile outside the notebooks; the notebooks then reuse them.

    .venv/bin/accelerate launch --multi_gpu --num_processes 8 scripts/build_matrix.py pythia

Under a launcher every fine-tuning is data-parallel (DDP): all ranks train, rank 0 publishes to the cache.
A tool beside the package: nothing in `resurface` imports it.
"""
from __future__ import annotations

import argparse

from resurface.builders.zoo import build_zoo
from resurface.study.session import start
from resurface.study.transfer import run_matrix


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    a = ap.parse_args(argv)
    study = start(a.profile, notebook="transfer-helper", verbose=False)
    run_matrix(study.cfg, study.cache, build_zoo(study.cfg, study.cache))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

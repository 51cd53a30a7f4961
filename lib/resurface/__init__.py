"""resurface: prompt-free unconditional self-training, reproduced end to end.

Six layers, lowest first; a module imports only from its own layer or lower ones, never in a circle
(import-linter checks both: the contracts are in pyproject.toml, the test in tests/test_layout.py):

    frame     where things live, the validated parameters, the artifact cache
    compute   devices, threads, the worker pool, data-parallel launchers
    lm        language models themselves: load/save, the training loop and its loss, the sampler and decoder,
              greedy extraction, the lm-eval backend
    build     one module per cached artifact kind, in the order of the data flow:
              corpora -> tokenizers -> canaries -> zoo (+ hub, gguf) -> synthetic -> students -> benchmarks
              -> evaluations -> proxy_scores, memorization_measures, natural_probes
    analysis  numbers only (numpy, pandas; no torch): statistics, every verdict rule, finding tables
    study     what the notebooks call: starting a notebook (session), the orchestration of each notebook
              (zoo_checks + zoo_tables 00, recipe 01, matrix + transfer 02, proxies 03, memorization 04),
              figures, the pipeline graph, the runner, the report and the command line
"""
__version__ = "0.1.0"

"""resurface: prompt-free unconditional self-training, reproduced end to end.

Data flow, one module per step:
corpora -> tokenizers -> zoo (pretraining, canaries) -> sampling (synthetic corpora)
-> finetune (students) -> benchmarks / memorization (evaluations) -> analysis -> figures.
"""
__version__ = "0.1.0"

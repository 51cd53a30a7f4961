"""One module per cached artifact kind, in the order of the data flow: corpora, tokenizers, canaries, the zoo
(and the models fetched for it: hub, gguf), synthetic corpora, students, benchmarks, evaluations, and the
measurements of findings 2-3 (proxy_scores, memorization_measures, natural_probes). Each builder declares its inputs
and config, and the cache keys the artifact by them."""

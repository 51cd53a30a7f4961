"""Language models themselves, independent of the study: load and save, the training loop and its fused loss,
the BOS sampler and its decoder, greedy extraction, and the lm-eval backend that scores with one forward pass."""

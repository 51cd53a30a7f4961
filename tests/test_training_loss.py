"""The fused, chunked output-head loss that CPU training uses equals the model's own loss."""
from __future__ import annotations

import pytest
import torch

from resurface.frame.schema import ModelConfig
from resurface.lm.training import causal_lm_loss
from resurface.lm.models import hf_config


@pytest.mark.parametrize("arch", ["gpt_neox", "llama", "gpt2"])
@pytest.mark.parametrize("chunk", [100, 512])  # 100 does not divide the 4 x 63 predicted positions
def test_fused_loss_and_gradients_equal_the_models_own(arch, chunk):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    m = ModelConfig(kind="lineage", architecture=arch, tokenizer="t", layers=2, width=32, heads=4)
    model = AutoModelForCausalLM.from_config(hf_config(m, 300, 64)).train()
    x = torch.randint(0, 300, (4, 64))
    ref = model(input_ids=x, labels=x).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused = causal_lm_loss(model, x, chunk=chunk)
    (2 * fused).backward()  # a scaled loss scales every gradient: backward uses the incoming gradient
    assert fused.item() == pytest.approx(ref.item(), rel=1e-6)
    for n, p in model.named_parameters():
        scale = ref_grads[n].abs().max().item() + 1e-12
        assert (p.grad - 2 * ref_grads[n]).abs().max().item() / scale < 1e-5, n


def test_other_heads_take_the_models_own_loss():
    from transformers import AutoModelForCausalLM
    m = ModelConfig(kind="lineage", architecture="gpt_neox", tokenizer="t", layers=1, width=32, heads=4)
    model = AutoModelForCausalLM.from_config(hf_config(m, 300, 64))
    x = torch.randint(0, 300, (2, 64))
    model.get_output_embeddings().bias = torch.nn.Parameter(torch.ones(300))  # a head with a bias: not fused
    assert causal_lm_loss(model, x).item() == pytest.approx(model(input_ids=x, labels=x).loss.item())
    assert causal_lm_loss(model, x).grad_fn.name() != "_ChunkedHeadLossBackward"
    model.get_output_embeddings().bias = None
    assert causal_lm_loss(model, x).grad_fn.name() == "_ChunkedHeadLossBackward"


@pytest.mark.parametrize("arch", ["gpt_neox", "llama"])
def test_a_loss_over_some_targets_equals_the_models_own_with_the_rest_ignored(arch):
    """`targets` (a planted twin's suffix-only loss): fused or not, the loss and gradients equal the model's own
    with labels of -100 where a position is left out."""
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    m = ModelConfig(kind="lineage", architecture=arch, tokenizer="t", layers=2, width=32, heads=4)
    model = AutoModelForCausalLM.from_config(hf_config(m, 300, 64)).train()
    x = torch.randint(0, 300, (4, 64))
    keep = torch.rand(4, 64) > 0.3
    ref = model(input_ids=x, labels=x.masked_fill(~keep, -100)).loss
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    fused = causal_lm_loss(model, x, chunk=100, targets=keep)
    assert fused.grad_fn.name() == "_ChunkedHeadLossBackward"
    fused.backward()
    assert fused.item() == pytest.approx(ref.item(), rel=1e-6)
    assert abs(fused.item() - causal_lm_loss(model, x).item()) > 1e-4  # the mask matters (far above rounding)
    for n, p in model.named_parameters():
        scale = ref_grads[n].abs().max().item() + 1e-12
        assert (p.grad - ref_grads[n]).abs().max().item() / scale < 1e-5, n
    torch.set_grad_enabled(False)
    try:  # the model's own path (no gradient: not fused)
        assert causal_lm_loss(model, x, targets=keep).item() == pytest.approx(ref.item(), rel=1e-6)
    finally:
        torch.set_grad_enabled(True)

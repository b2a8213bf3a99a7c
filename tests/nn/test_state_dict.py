"""state_dicts interchange with python_ref and survive save/load with weights_only=True."""
import io

import torch

import expandnets_cuda as ec
import python_ref as pr
from expandnets_cuda.models import smallnet7


def test_fused_and_reference_state_dicts_interchange():
    fused = ec.FusedExpandConv2d(4, 6, 5, padding=2, strategy="ck", rate=2)
    ref = pr.ExpandedConv2d(4, 6, 5, padding=2, strategy="ck", rate=2)
    assert fused.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-5)


def test_save_load_expanded_model_weights_only():
    model = ec.expand_model(smallnet7(), "cl", rate=2, fc=True).eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = ec.expand_model(smallnet7(), "cl", rate=2, fc=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.equal(fresh(x), model(x))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)

"""PEFT adapters as unlearned models: applied to a copy of the base, audited like any model."""

from __future__ import annotations

import pytest
import torch

from unpact.adapters import is_adapter_dir, load_adapter
from unpact.audit import AuditConfig, Models, audit
from unpact.data import Example
from unpact.errors import ModelLoadError
from unpact.models import ModelState, load_model, weights_hash
from unpact.testing import tiny_model

peft = pytest.importorskip("peft")  # a dev dependency: installed by `make install`


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory):
    import copy

    model, tok = tiny_model("gpt2")
    base = load_model(model, tok, name="tiny-base")
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    peft_model = peft.get_peft_model(copy.deepcopy(model), cfg)  # random A and B: the adapter changes outputs
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    return base, peft_model.eval(), out


def test_adapter_is_applied_to_a_copy_and_merged(base_and_adapter):
    base, peft_model, path = base_and_adapter
    assert is_adapter_dir(path) and not is_adapter_dir(path.parent)
    ids = torch.tensor([[5, 17, 33, 2, 41]])
    before = ModelState.capture(base.model, with_weights=True)
    with torch.no_grad():
        ref_base = base.model(input_ids=ids).logits
    unl = load_adapter(base, path)
    with torch.no_grad():
        got, want = unl.model(input_ids=ids).logits, peft_model(input_ids=ids).logits
        after_base = base.model(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)  # merged == the adapter model
    assert (got - ref_base).abs().max() > 1e-3  # and it is not the base
    torch.testing.assert_close(after_base, ref_base)  # the base is untouched
    assert ModelState.capture(base.model, with_weights=True) == before
    assert weights_hash(unl.model) != weights_hash(base.model)


def test_an_adapter_alone_names_the_base_it_needs(base_and_adapter):
    _, _, path = base_and_adapter
    with pytest.raises(ModelLoadError, match="PEFT adapter.*--base"):
        load_model(str(path))


def test_adapter_is_audited(base_and_adapter, tmp_path):
    base, _, path = base_and_adapter
    forget = [Example(f"f{i}", f"Where was person {i} born?", "London", keywords=("born",)) for i in range(4)]
    retain = [Example(f"r{i}", f"What is the job of person {i}?", "author", keywords=("job",)) for i in range(4)]
    cfg = AuditConfig(
        out=str(tmp_path),
        attacks=("restate",),
        attribution="loo",
        batch_size=2,
        max_new_tokens=2,
        n_retain_attacked=2,
        lens=False,
        circuits=0,
        progress=False,
        min_base_accuracy=0.0,  # a random tiny model knows no facts
    )
    s = audit(cfg, Models(base, {"lora": str(path)}), forget, retain)
    assert set(s.models) == {"base", "lora"} and s.models["lora"].role == "unlearned"

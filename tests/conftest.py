"""Shared fixtures: tiny random models and the micro toy world (built once per session, offline)."""

from __future__ import annotations

import os

import pytest
import torch

# Tiny models run fastest on one thread (thread overhead dominates; measured 4.7 s vs 0.19 s per
# training step with 2 threads on a shared 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory: pytest.TempPathFactory):
    """The micro toy world (base + retain-only models and splits), built once per test session.

    Set ``UNPACT_TEST_CACHE`` to reuse a build across sessions while developing.
    """
    from unpact.toyworld import build_toyworld

    cache = os.environ.get("UNPACT_TEST_CACHE") or str(tmp_path_factory.mktemp("unpact-cache"))
    return build_toyworld("micro", cache_dir=cache, progress=False)


@pytest.fixture(scope="session")
def toy_base(micro_world):
    """The micro toy world's base model as a Subject."""
    return micro_world.load_base()


@pytest.fixture
def tiny():
    """A random 2-layer GPT-2 Subject with the tiny tokenizer."""
    from unpact.testing import tiny_subject

    return tiny_subject("gpt2")


@pytest.fixture
def tiny_bridge(tmp_path):
    """``(hf_model, bridge)``: a random tiny GPT-2 and the TransformerLens 4.x bridge around it (no hub).

    transformer-lens is a test dependency (``make test`` installs the ``tl`` extra), so a missing
    package fails here instead of skipping.
    """
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoTokenizer

    from unpact.testing import tiny_model

    model, tok = tiny_model("gpt2")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)  # the bridge wants a tokenizer that knows its path
    bridge = TransformerBridge.boot_transformers(str(tmp_path), hf_model=model, tokenizer=tok, device="cpu")
    return model, bridge

"""Errors a user can cause: each is an :class:`~unpact.errors.UnpactError` naming the bad value, its source and the fix.

Library calls assert the class and a message fragment; command-line calls assert exit status 2 and one error line
(``unpact CMD: error: ...``) with no traceback.
"""

from __future__ import annotations

import json
import logging
import zipfile

import numpy as np
import pytest
import torch

from unpact.data import Example
from unpact.errors import (
    ArchitectureError,
    DataFileError,
    InputError,
    MissingFileError,
    ModelLoadError,
    UnknownArchitectureError,
    UnknownNameError,
    UnpactError,
    UnsupportedFeatureError,
    check_count,
    check_positive,
)
from unpact.models import load_model
from unpact.testing import tiny_model, tiny_subject

EX = [
    Example("ada", "Where was Ada Lovelace born?", "London", keywords=("Ada", "Lovelace")),
    Example("fr", "What is the capital of France?", "Paris", keywords=("France",)),
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny GPT-2 saved with its tokenizer (what ``save_pretrained`` writes)."""
    d = tmp_path_factory.mktemp("model")
    model, tok = tiny_model("gpt2")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("data") / "forget.jsonl"
    path.write_text("".join(json.dumps({"question": e.prompt, "answer": e.answer}) + "\n" for e in EX))
    return path


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``unpact ARGV``; assert exit 2 and exactly one error line, no traceback; return that line."""
    from unpact.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("unpact ")]
    assert len(lines) == 1 and lines[0].startswith(f"unpact {argv[0]}: error: "), err
    return lines[0]


def _no_transformers_load(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def boom(*a, **k):  # pragma: no cover - reached only if the path check failed
        raise AssertionError("transformers was asked to load a path unpact should have refused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)


# ----- 1. paths that do not hold a model ------------------------------------------------------------------------
def test_model_paths_that_hold_no_model(tmp_path, model_dir, data_file, monkeypatch) -> None:
    _no_transformers_load(monkeypatch)
    with pytest.raises(ModelLoadError, match="config.json file, not its directory.*pass the directory"):
        load_model(model_dir / "config.json")
    with pytest.raises(ModelLoadError, match="JSONL file .question/answer data.*not a model directory"):
        load_model(data_file)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"no config.json in this directory \(it holds: nothing\)"):
        load_model(tmp_path / "empty")
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "summary.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"it holds: summary.json\).*save_pretrained"):
        load_model(tmp_path / "audit")
    world = tmp_path / "world"
    (world / "base").mkdir(parents=True)
    (world / "base" / "config.json").write_text("{}")
    (world / "config.json").write_text(json.dumps({"preset": "micro", "seed": 0}))
    with pytest.raises(ModelLoadError, match="no model_type.*toy world.*base"):
        load_model(world)
    cfg_only = tmp_path / "cfg_only"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="no weights"):
        load_model(cfg_only)


def test_unknown_architecture_fails_before_weights_are_read(tmp_path, model_dir, monkeypatch) -> None:
    _no_transformers_load(monkeypatch)
    cfg = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(UnknownArchitectureError, match="'bert'.*register_architecture"):
        load_model(tmp_path)


def test_model_without_tokenizer_files(tmp_path) -> None:
    model, _ = tiny_model("gpt2")
    model.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no tokenizer files.*tokenizer.save_pretrained"):
        load_model(tmp_path)


def test_damaged_weights_file(tmp_path, model_dir) -> None:
    for f in model_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="cannot read the checkpoint.*save the model again"):
        load_model(tmp_path)


def test_cli_model_given_as_config_or_data_file(capsys, model_dir, data_file) -> None:
    line = _cli_error(capsys, ["lens", "--model", str(model_dir / "config.json"), "--prompt", "p", "--answer", "a"])
    assert "config.json file, not its directory" in line
    line = _cli_error(capsys, ["evaluate", "--model", str(data_file), "--split", str(data_file)])
    assert "not a model directory" in line


# ----- 2. a missing path never becomes a hub lookup -------------------------------------------------------------
@pytest.mark.parametrize("command", ["attribute", "lens", "circuit", "evaluate", "unlearn"])
def test_cli_missing_relative_model_path(command, capsys, tmp_path, monkeypatch) -> None:
    _no_transformers_load(monkeypatch)
    monkeypatch.chdir(tmp_path)
    extra = {
        "evaluate": ["--split", "x.jsonl"],
        "unlearn": ["--forget", "x.jsonl", "--out", "out"],
    }.get(command, ["--prompt", "p", "--answer", "a"])
    line = _cli_error(capsys, [command, "--model", "./nope", *extra])
    assert "./nope: no model directory" in line and "unpact loads local models" in line


def test_hub_style_name_is_not_fetched(monkeypatch) -> None:
    _no_transformers_load(monkeypatch)
    with pytest.raises(MissingFileError, match="huggingface-cli download org/name --local-dir") as err:
        load_model("org/name")
    assert isinstance(err.value, FileNotFoundError)


# ----- 3. no language-model head --------------------------------------------------------------------------------
def test_base_model_without_lm_head(tmp_path) -> None:
    import transformers

    from unpact.testing import _config, tiny_tokenizer

    tok = tiny_tokenizer()
    base = transformers.AutoModel.from_config(_config("llama", len(tok)))
    with pytest.raises(ModelLoadError, match="LlamaModel has no language-model head.*LlamaForCausalLM"):
        load_model(base, tok)
    base.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no weights for lm_head.weight.*LlamaModel.*random"):
        load_model(tmp_path)


# ----- 4. counts ------------------------------------------------------------------------------------------------
def _count_calls():
    from unpact.attacks import run_attack
    from unpact.attribution import integrated_gradients, leave_one_out
    from unpact.circuits import edge_attribution_patching
    from unpact.evaluate import answer_logprob, evaluate, generate
    from unpact.lens import logit_lens

    return {
        "ig batch_size": (lambda s: integrated_gradients(s, EX, batch_size=0), "batch_size must be >= 1, got 0"),
        "ig n_steps": (lambda s: integrated_gradients(s, EX, n_steps=-3), "n_steps must be >= 1, got -3"),
        "ig internal": (lambda s: integrated_gradients(s, EX, internal_batch_size=0), "internal_batch_size"),
        "ig float": (lambda s: integrated_gradients(s, EX, n_steps=2.5), "n_steps must be an integer, got float"),
        "loo batch_size": (lambda s: leave_one_out(s, EX, batch_size=0), "batch_size must be >= 1"),
        "lens top_k": (lambda s: logit_lens(s, EX, top_k=0), "top_k must be >= 1"),
        "lens batch_size": (lambda s: logit_lens(s, EX, batch_size=-1), "batch_size must be >= 1"),
        "attack tokens": (lambda s: run_attack(s, EX, "restate", max_new_tokens=0), "max_new_tokens"),
        "attack batch": (lambda s: run_attack(s, EX, "restate", batch_size=0), "batch_size"),
        "generate samples": (lambda s: generate(s, EX, num_samples=0), "num_samples must be >= 1"),
        "generate tokens": (lambda s: generate(s, EX, max_new_tokens=-1), "max_new_tokens must be >= 1"),
        "evaluate batch": (lambda s: evaluate(s, EX, batch_size=0), "batch_size must be >= 1"),
        "logprob batch": (lambda s: answer_logprob(s, EX, batch_size=0), "batch_size must be >= 1"),
        "eap n_steps": (lambda s: edge_attribution_patching(s, EX[0], method="eap-ig", n_steps=0), "n_steps"),
        "eap batch": (lambda s: edge_attribution_patching(s, EX[0], internal_batch_size=0), "internal_batch_size"),
    }


@pytest.mark.parametrize("case", list(_count_calls()))
def test_bad_counts_name_the_argument(case, tiny) -> None:
    call, fragment = _count_calls()[case]
    with pytest.raises(InputError, match=fragment):
        call(tiny)


def test_one_example_where_a_list_is_expected(tiny) -> None:
    from unpact.attacks import run_attack
    from unpact.attribution import integrated_gradients
    from unpact.evaluate import evaluate, generate
    from unpact.lens import logit_lens

    for call in (logit_lens, integrated_gradients, evaluate, lambda s, e: run_attack(s, e, "plain")):
        with pytest.raises(InputError, match="examples must be a list of Example objects, got a single Example"):
            call(tiny, EX[0])
    with pytest.raises(InputError, match=r"examples\[1\] is str, not Example"):
        logit_lens(tiny, [EX[0], "Where was Ada born?"])
    with pytest.raises(InputError, match="got a single str.*wrap it in a list"):
        generate(tiny, "Where was Ada born?")


def test_count_validators() -> None:
    assert check_positive("n", np.int64(3)) == 3 and check_count("k", 0) == 0
    for bad in (True, 1.0, "2", None):
        with pytest.raises(InputError, match="must be an integer"):
            check_positive("n", bad)
    with pytest.raises(InputError, match="^f: k must be >= 0, got -1$"):
        check_count("k", -1, where="f")


def test_edge_scores_top_k_negative(tiny) -> None:
    from unpact.circuits import edge_attribution_patching

    scores = edge_attribution_patching(tiny, EX[0])
    with pytest.raises(InputError, match="k must be >= 0"):
        scores.top_k(-1)


def test_cli_bad_count_after_a_real_load(capsys, model_dir) -> None:
    line = _cli_error(
        capsys,
        ["lens", "--model", str(model_dir), "--prompt", "Where was Ada born?", "--answer", "London", "--top-k", "0"],
    )
    assert "logit_lens: top_k must be >= 1, got 0" in line


# ----- 5. arguments of the other attribution method -------------------------------------------------------------
def test_leave_one_out_has_no_baseline(tiny) -> None:
    from unpact.attribution import attribute, leave_one_out

    with pytest.raises(InputError, match="leave-one-out takes no baseline.*deletes.*target, batch_size"):
        leave_one_out(tiny, EX, baseline="pad")
    with pytest.raises(InputError, match="takes no n_steps"):
        attribute(tiny, EX[0], method="loo", n_steps=8)
    with pytest.raises(InputError, match="integrated gradients takes no argument n_step.*n_steps"):
        attribute(tiny, EX[0], n_step=8)


def test_unknown_attribution_method(tiny) -> None:
    from unpact.attribution import attribute, integrated_gradients

    with pytest.raises(UnknownNameError, match="unknown attribution method 'shap'.*'ig'.*'loo'"):
        attribute(tiny, EX[0], method="shap")
    with pytest.raises(InputError, match="IG quadrature rule: pass it as ig_method"):
        attribute(tiny, EX[0], method="riemann_left")
    with pytest.raises(UnknownNameError, match="unknown IG method 'simpson'.*gausslegendre"):
        integrated_gradients(tiny, EX, method="simpson")
    with pytest.raises(InputError, match="n_steps must be >= 2 for riemann_left"):
        integrated_gradients(tiny, EX, method="riemann_left", n_steps=1)


# ----- 6. key words ---------------------------------------------------------------------------------------------
def test_keywords_must_be_one_list_per_example(tiny) -> None:
    from unpact.attacks import apply_text_attack, run_attack

    with pytest.raises(InputError, match=r"flat list of strings \('Ada'\) for 2 examples.*\[\['Ada', 'Lovelace'\]"):
        run_attack(tiny, EX, "restate", ["Ada"])
    with pytest.raises(InputError, match="flat list of strings"):
        run_attack(tiny, EX[:1], "restate", ["Ada"])  # one example: would be read letter by letter
    with pytest.raises(InputError, match=r"keywords is the string 'Ada'.*\[\['Ada'\]\]"):
        run_attack(tiny, EX, "restate", "Ada")
    with pytest.raises(InputError, match="got 1 keyword lists for 2 examples"):
        run_attack(tiny, EX, "restate", [["Ada"]])
    with pytest.raises(InputError, match="key words of example 1 hold 3"):
        run_attack(tiny, EX, "restate", [["Ada"], [3]])
    with pytest.raises(InputError, match="keywords is the string"):
        apply_text_attack("restate", EX[0], "Ada")


def test_absent_keywords_warn_once_and_equal_plain(tiny, caplog) -> None:
    from unpact.attacks import run_attack

    with caplog.at_level(logging.WARNING, logger="unpact.attacks"):
        out = run_attack(tiny, EX, "restate", [["Babbage"], ["Paris"]], max_new_tokens=2)
    warned = [r.getMessage() for r in caplog.records if "equals the plain prompt" in r.getMessage()]
    # "Paris" is the answer of EX[1]: dropped by the leak guard, so both examples are listed, in one warning
    assert len(warned) == 1 and "2 of 2 examples (ada, fr)" in warned[0]
    plain = run_attack(tiny, EX, "plain", max_new_tokens=2)
    assert [o.samples for o in out] == [o.samples for o in plain]
    assert [o.example.prompt for o in out] == [e.prompt for e in EX]


# ----- 7. NaN / inf -------------------------------------------------------------------------------------------------
def test_nan_weights_are_refused_at_load() -> None:
    model, tok = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    with pytest.raises(ModelLoadError, match="model.layers.1.mlp.down_proj.weight holds 1 NaN/inf"):
        load_model(model, tok, name="broken")


def _nan_calls():
    from unpact.attacks import run_attack
    from unpact.attribution import integrated_gradients, leave_one_out
    from unpact.circuits import edge_attribution_patching
    from unpact.evaluate import evaluate, generate
    from unpact.lens import logit_lens
    from unpact.quality import response_perplexity

    return {
        "ig": lambda s: integrated_gradients(s, EX, n_steps=2),
        "loo": lambda s: leave_one_out(s, EX),
        "lens": lambda s: logit_lens(s, EX),
        "attack": lambda s: run_attack(s, EX, "embed_scale", max_new_tokens=1),
        "generate": lambda s: generate(s, EX, max_new_tokens=1),
        "evaluate": lambda s: evaluate(s, EX, max_new_tokens=1),
        "eap": lambda s: edge_attribution_patching(s, EX[0]),
        "perplexity": lambda s: response_perplexity(s, ["Where was Ada born?"], ["London"]),
    }


@pytest.mark.parametrize("tracer", list(_nan_calls()))
def test_nan_logits_are_refused_naming_the_model(tracer) -> None:
    s = tiny_subject("llama")
    with torch.no_grad():
        s.final_norm.weight[0] = float("nan")  # after load_model's check: as if overflowing at run time
    with pytest.raises(InputError, match="model 'tiny-llama' produced .* NaN/inf values in its .*logits"):
        _nan_calls()[tracer](s)


# ----- 8. registries --------------------------------------------------------------------------------------------
def test_registry_lookups_list_the_valid_names(micro_world) -> None:
    from unpact._arch import get_architecture
    from unpact.attacks import get_attack
    from unpact.toyworld import world_config
    from unpact.unlearn.methods import get_method

    for call, fragment in [
        (lambda: get_method("forget_all"), "unknown unlearning method 'forget_all'.*npo_gd"),
        (lambda: get_attack("shout"), "unknown attack 'shout'.*restate"),
        (lambda: world_config("huge"), "unknown toy-world preset 'huge'.*micro"),
        (lambda: micro_world.split("forget50"), "unknown split 'forget50'.*forget10"),
    ]:
        with pytest.raises(UnknownNameError, match=fragment) as err:
            call()
        assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    with pytest.raises(UnknownArchitectureError, match="'mamba'.*gpt2.*register_architecture"):
        get_architecture("mamba")


def test_cli_unknown_preset_and_method(capsys, model_dir, data_file, tmp_path) -> None:
    line = _cli_error(capsys, ["toyworld", "build", "--preset", "huge", "--cache-dir", str(tmp_path)])
    assert "unknown toy-world preset 'huge'" in line and "micro" in line
    line = _cli_error(
        capsys,
        [
            "unlearn",
            "--model",
            str(model_dir),
            "--forget",
            str(data_file),
            "--out",
            str(tmp_path / "out"),
            "--method",
            "forget_all",
        ],
    )
    assert "unknown unlearning method 'forget_all'" in line and "npo_gd" in line


# ----- 9. other raises converted --------------------------------------------------------------------------------
def test_cli_hparam_without_value(capsys) -> None:
    line = _cli_error(capsys, ["unlearn", "--model", "m", "--forget", "f", "--out", "o", "--hparam", "beta"])
    assert "--hparam: 'beta' is not KEY=VALUE" in line


def test_unlearn_bad_hyperparameters(tiny) -> None:
    from unpact.unlearn import unlearn

    with pytest.raises(InputError, match="hyperparameter beta of 'npo' must be a number, got str 'big'"):
        unlearn(tiny, EX, None, "npo", beta="big", progress=False)
    with pytest.raises(InputError, match="lr must be > 0"):
        unlearn(tiny, EX, None, "ga", lr=0.0, progress=False)
    with pytest.raises(InputError, match="steps must be >= 1"):
        unlearn(tiny, EX, None, "ga", steps=0, progress=False)


def test_load_bundle_errors(tmp_path) -> None:
    from unpact._io import load_bundle

    with pytest.raises(MissingFileError, match="no saved result"):
        load_bundle(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFileError, match="junk.npz: not a saved unpact result .not a zip"):
        load_bundle(tmp_path / "junk.npz")
    with zipfile.ZipFile(tmp_path / "nometa.npz", "w") as zf:
        zf.writestr("x.npy", b"")
    with pytest.raises(DataFileError, match="no meta.json"):
        load_bundle(tmp_path / "nometa.npz")


def test_architecture_errors() -> None:
    from unpact._arch import ArchSpec, get_architecture, register_architecture
    from unpact.models import Subject

    with pytest.raises(InputError, match="already registered.*overwrite=True"):
        register_architecture(get_architecture("gpt2"))
    model, tok = tiny_model("gpt2")
    bad = ArchSpec(**{**get_architecture("gpt2").__dict__, "blocks": "transformer.wte"})
    with pytest.raises(ArchitectureError, match="must be a ModuleList.*register_architecture"):
        Subject(model=model, tokenizer=tok, spec=bad, name="x")


def test_unsupported_architecture_feature_is_both_kinds() -> None:
    from unpact.circuits import edge_attribution_patching

    with pytest.raises(UnsupportedFeatureError, match="does not support gemma2.*integrated gradients") as err:
        edge_attribution_patching(tiny_subject("gemma2"), EX[0])
    assert isinstance(err.value, NotImplementedError) and isinstance(err.value, ArchitectureError)


def test_every_error_is_one_line_with_source_and_fix() -> None:
    err = InputError("batch_size must be >= 1, got 0", source="logit_lens", fix="use 8")
    assert str(err) == "logit_lens: batch_size must be >= 1, got 0; use 8"
    assert isinstance(UnknownNameError("x"), UnpactError) and str(UnknownNameError("x")) == "x"


def test_every_error_survives_pickling():
    # errors raised in worker processes reach the parent through pickle
    import inspect
    import pickle

    import unpact.errors as E

    classes = [c for _, c in inspect.getmembers(E, inspect.isclass) if issubclass(c, E.UnpactError)]
    assert len(classes) >= 10
    for cls in classes:
        params = inspect.signature(cls).parameters
        kw = {k: v for k, v in {"path": "/x/f.json", "line": 3, "source": "src", "fix": "do y"}.items() if k in params}
        err = cls("went wrong", **kw)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls and str(back) == str(err) and back.__dict__ == err.__dict__

"""Every audit setting in one place: :class:`AuditConfig`.

The command line's options (:func:`add_arguments`, :func:`from_namespace`), the Python entry points
(``audit(config, models, forget, retain)``) and the resume check (:func:`unpact.audit.resume.resume_key`)
all derive from the dataclass fields below: a new setting is one new field, with its default, help text and validation.

Field metadata:
    help: The help text (the CLI appends the default).
    resume: True when the setting changes what the audit writes to its records or key words; such
        settings are part of the resume key, so an output directory never mixes records made with
        different values. Settings that only change what is derived from the records (the verdict
        rule, circuits, the lens, progress bars) can change between runs.
    cli: False for settings with no command-line option.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from unpact.errors import InputError
from unpact.prompts import PromptFormat
from unpact.verdict import VerdictRule

__all__ = [
    "AuditConfig",
    "add_arguments",
    "from_namespace",
    "RECORDS_SCHEMA",
    "DEFAULT_METHODS",
    "PRESET_LIMITS",
]

#: Version of the records' and key words' format and meaning: bump it when the code that writes them
#: changes what a record holds, so that resuming never mixes old and new records.
RECORDS_SCHEMA = 3

#: Unlearning methods the toy-world audit runs by default.
DEFAULT_METHODS: tuple[str, ...] = ("ga_gd", "npo_gd", "idk", "rmu", "relearn", "palu", "unierase")

#: Items per split of the toy-world audit, per preset (the user's own data is used in full unless
#: ``max_forget`` / ``max_retain`` / ``n_retain_attacked`` say otherwise): keeps the default audit
#: around 15 minutes on 2 CPU cores.
PRESET_LIMITS: dict[str, dict[str, int | None]] = {
    "micro": {"max_forget": None, "max_retain": 60, "n_retain_attacked": 16},
    "default": {"max_forget": None, "max_retain": 150, "n_retain_attacked": 40},
}

#: Retain items attacked and attributed when neither the user nor a preset says.
DEFAULT_RETAIN_ATTACKED = 32


def _setting(default: Any = None, help: str = "", *, resume: bool = True, cli: bool = True, factory: Any = None) -> Any:
    meta = {"help": help, "resume": resume, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class AuditConfig:
    """The settings of one audit (see the module docstring for how they are used).

    Attributes:
        out: Output directory; re-running with the same settings resumes.
        attacks: Attack names; ``None``: every built-in attack (:data:`unpact.attacks.DEFAULT_ATTACKS`).
        keywords: Where key words come from: the base model's attribution (unPact's rule) or the
            items' own ``keywords``.
        attribution: Attribution method for key words and tracers: integrated gradients or leave-one-out.
        ig_steps: Integrated-gradients quadrature nodes.
        alpha: unPact key-word rule threshold (``None``: :data:`unpact.keytokens.DEFAULT_ALPHA`).
        beta: unPact key-word rule count (``None``: :data:`unpact.keytokens.DEFAULT_BETA`).
        max_forget: Use at most this many forget items (the first ones).
        max_retain: Use at most this many retain items.
        n_retain_attacked: Retain items (the first ones) also attacked and attributed on every model.
        max_new_tokens: Tokens decoded per answer (``None``: the longest gold answer plus 4).
        batch_size: Items per chunk, the unit of resumption.
        seed: Seed of sampling attacks and of the toy world's unlearning.
        lens: Save logit-lens trajectories of the forget items.
        lens_method: ``"logit"`` (the model's own final norm and unembedding) or ``"tuned"``: a tuned lens
            (:mod:`unpact.representations.tuned_lens`) is fit per model on the probes' retain items (never
            the forget items), saved under ``representations/MODEL/tuned_lens/``, and decodes every layer.
        circuits: Forget items that get EAP-IG circuit diffs for the report (0: none).
        progress: Show progress bars.
        workers: Worker processes for the record, attribution and lens units: ``None`` none (everything
            in this process), ``0`` automatic (the command line's default), or a number; see
            :func:`unpact.audit.workers.worker_count`. A script that asks for workers must keep its top
            level under ``if __name__ == "__main__":`` (:mod:`unpact._procs`).
        dist_timeout: Under torchrun (:mod:`unpact.audit.shard`): seconds a rank waits at a barrier for the
            others (rank 0 alone finishes the audit's later stages) before stopping with an error.
        template: Prompt template holding ``{question}`` (``None``: the models' own format; the toy
            world's is its own); see :class:`unpact.prompts.PromptFormat`.
        answer_sep: Text between prompt and answer (``None``: a space unless there is whitespace).
        chat_template: Put the (templated) question through the tokenizer's chat template.
        system_prompt: A system turn (with ``chat_template``).
        min_base_accuracy: Before the audit's work, the base model answers the first 32 forget and 32
            retain items under the prompt format; below this share right (lenient match) on either, the
            audit stops with the figures (0: no check). A wrong format otherwise shows up only as a
            misleading verdict.
        force: Warn instead of stopping when that check fails.
        relearn: Run the relearning attack (:mod:`unpact.weights.relearning`) on each unlearned model and the
            control (needs a retain-only model).
        relearn_steps: The last fine-tuning step; the curve is measured at 0, 1, 2, 4, ... up to it.
        relearn_lr: Its learning rate (``None``: :mod:`unpact.weights.relearning`'s default).
        quantize: Run the quantization attack (:mod:`unpact.weights.quantization`) on every model.
        weights_items: At most this many base-known forget items (spread over subjects) are measured by
            the weight attacks per model (relearning measures those of half B).
        probes: Fit per-layer linear probes (:mod:`unpact.representations.probes`) on every model: trained
            on retain people, tested on the base-known forget items.
        directions: Estimate each unlearned model's unlearning direction on half A of the forget people
            (:mod:`unpact.representations.directions`), ablate it or add the mean shift back, score half B.
        probe_items: Retain items the probes are fit on, spread over facts, taken from *all* the retain
            items given (not only the ``max_retain`` audited ones: a probe needs many people).
        soft_prompt: Learn a soft prompt (:mod:`unpact.attacks.soft_prompt`) on half A of the forget people
            for every unlearned model and the retain-only control; score half B.
        soft_prompt_tokens: Its number of input embeddings.
        soft_prompt_steps: Its optimisation steps.
        diff_attacks: Attacks chosen from the circuit and lens diffs (:mod:`unpact.attacks.tracer_diffs`) on
            half A, scored on half B, for every unlearned model and the retain-only control.
        diff_attack_items: Half-A items (spread over facts) the heads and the lens layer are chosen on.
        stop_words: Words never chosen as key words (:func:`unpact.keytokens.stop_list`): ``"en"``
            (English function words), ``"none"``, or the path of a UTF-8 file with one word per line.
        standard_metrics: Compute the field's standard metrics per model (:mod:`unpact.standard_metrics`).
        standard_items: At most this many forget, retain and holdout items each (spread) for them.
        rule: The verdict's thresholds.
        preset: Toy world only: its size.
        methods: Toy world only: unlearning methods to audit.
        strength: Toy world only: ``"matched"`` sweeps each method's strength (:mod:`unpact.sweep`, saved under
            ``out/sweep``) and audits its strongest point within the utility band; ``"default"`` audits each
            method at its default hyperparameters.
        band: Toy world, matched: the utility band (validation retain accuracy at least ``band`` times the base's).
        sweep_points: Toy world, matched: the strengths swept (:func:`unpact.sweep.parse_schedules`).
    """

    out: str = _setting("runs/audit", "output directory (re-run with the same settings to resume)", resume=False)
    attacks: tuple[str, ...] | None = _setting(None, "comma-separated attack names (default: all built-in)")
    keywords: Literal["attribution", "oracle"] = _setting(
        "attribution", "key words from the base model's attribution, or the items' own keywords (oracle)"
    )
    attribution: Literal["ig", "loo"] = _setting("ig", "attribution method: integrated gradients or leave-one-out")
    ig_steps: int = _setting(16, "integrated-gradients steps")
    alpha: float | None = _setting(None, "unPact key-word rule: share threshold (default 0.1)")
    beta: int | None = _setting(None, "unPact key-word rule: at most this many words (default 3)")
    max_forget: int | None = _setting(None, "use at most this many forget items (default: all)")
    max_retain: int | None = _setting(None, "use at most this many retain items (default: all; toy world: preset)")
    n_retain_attacked: int | None = _setting(
        None, f"retain items attacked and attributed (default {DEFAULT_RETAIN_ATTACKED}; toy world: preset)"
    )
    max_new_tokens: int | None = _setting(None, "tokens decoded per answer (default: longest gold answer + 4)")
    batch_size: int = _setting(32, "items per chunk (the unit of resumption)")
    seed: int = _setting(0, "seed of sampling attacks (and of the toy world's unlearning)")
    lens: bool = _setting(True, "save logit-lens trajectories of forget items", resume=False)
    lens_method: Literal["logit", "tuned"] = _setting(
        "logit", "lens decoding: the model's own unembedding (logit) or a tuned lens fit on retain items"
    )
    circuits: int = _setting(3, "forget items with EAP-IG circuit diffs in the report (0: none)", resume=False)
    progress: bool = _setting(True, "progress bars", resume=False)
    workers: int | None = _setting(
        None,
        "worker processes for the records, attributions and lens (0: automatic, 2 on a CPU with 2+ cores when the "
        "models are small, the command line's default; Python's default: none); the results do not depend on it",
        resume=False,
    )
    dist_timeout: float = _setting(
        7200.0,
        "torchrun (a split audit): seconds a rank waits for the others at a barrier before it stops with an error",
        resume=False,
    )
    # the format in effect (these over the base model's own) is part of the resume key as rendered ids
    template: str | None = _setting(None, "prompt template holding {question}", cli=False, resume=False)
    answer_sep: str | None = _setting(None, "text between prompt and answer", cli=False, resume=False)
    chat_template: bool = _setting(False, "use the tokenizer's chat template", cli=False, resume=False)
    system_prompt: str | None = _setting(None, "system prompt of the chat template", cli=False, resume=False)
    min_base_accuracy: float = _setting(
        0.2,
        "stop before the audit's work when the base model answers fewer than this share of the first 32 forget or "
        "retain items right under the prompt format (a wrong template?); 0: no check",
        resume=False,
    )
    force: bool = _setting(False, "only warn when the base model answers too few items right (see above)", resume=False)
    relearn: bool = _setting(
        True, "relearning attack: fine-tune copies on half A of the forget facts, test half B", resume=False
    )
    relearn_steps: int = _setting(32, "relearning: last fine-tuning step (measured at 0, 1, 2, 4, ... up to it)")
    relearn_lr: float | None = _setting(None, "relearning learning rate (default: the relearning module's)")
    quantize: bool = _setting(
        True, "quantization attack: int8 / int4 round-to-nearest copies of every model", resume=False
    )
    weights_items: int = _setting(
        96, "forget items (known by the base model, spread over subjects) the weight attacks measure per model"
    )
    probes: bool = _setting(
        True, "per-layer linear probes on every model: trained on retain people, tested on forget", resume=False
    )
    directions: bool = _setting(
        True, "unlearning direction: ablate it (or add the mean shift back) with hooks, test half B", resume=False
    )
    probe_items: int = _setting(1024, "retain items (of all given, spread over facts) the probes are fit on")
    soft_prompt: bool = _setting(
        True,
        "soft-prompt attack: input embeddings learned on half A, tested on half B (control: retain-only)",
        resume=False,
    )
    soft_prompt_tokens: int = _setting(8, "soft-prompt attack: learned input embeddings")
    soft_prompt_steps: int = _setting(100, "soft-prompt attack: optimisation steps")
    diff_attacks: bool = _setting(
        True,
        "attacks chosen from the circuit and lens diffs on half A, tested on half B (control: retain-only)",
        resume=False,
    )
    diff_attack_items: int = _setting(32, "diff attacks: half-A items the heads and the lens layer are chosen on")
    stop_words: str = _setting(
        "en", "words never chosen as key words: 'en' (English function words), 'none', or a file of one word per line"
    )
    standard_metrics: bool = _setting(
        True, "the field's standard metrics per model (TOFU truth ratio, forget quality, MIA, PrivLeak)", resume=False
    )
    standard_items: int = _setting(
        100, "standard metrics: forget, retain and holdout items scored (spread)", resume=False
    )
    rule: VerdictRule = _setting(help="the verdict's thresholds", resume=False, cli=False, factory=VerdictRule)
    preset: Literal["default", "micro"] = _setting("default", "toy world: its size (micro: fast)", resume=False)
    methods: tuple[str, ...] = _setting(DEFAULT_METHODS, "toy world: unlearning methods, comma-separated", resume=False)
    strength: Literal["matched", "default"] = _setting(
        "matched",
        "toy world: audit each method at its utility-matched point of a strength sweep, or at its default strength",
        resume=False,
    )
    band: float = _setting(0.9, "toy world, matched: validation retain accuracy >= BAND x the base's", resume=False)
    sweep_points: str | None = _setting(
        None, "toy world, matched: the strengths swept, as unpact sweep --points (default: its schedules)", resume=False
    )

    def __post_init__(self) -> None:
        if isinstance(self.out, os.PathLike):
            object.__setattr__(self, "out", os.fspath(self.out))
        hints = _hints()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):  # lists from JSON or a caller: store as tuples (hashable, frozen)
                object.__setattr__(self, f.name, tuple(value))
                value = tuple(value)
            _check_type(f.name, value, hints[f.name])
        for name in (
            "ig_steps",
            "batch_size",
            "max_forget",
            "max_retain",
            "max_new_tokens",
            "beta",
            "relearn_steps",
            "weights_items",
            "probe_items",
            "soft_prompt_tokens",
            "soft_prompt_steps",
            "diff_attack_items",
            "standard_items",
        ):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise InputError(
                    f"{name} must be >= 1, got {v}",
                    source=_where(name),
                    fix="give a positive number" + (" (or leave it unset)" if name != "batch_size" else ""),
                )
        for name in ("n_retain_attacked", "circuits", "seed", "workers"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise InputError(f"{name} must be >= 0, got {v}", source=_where(name), fix="give 0 or more")
        if self.relearn_lr is not None and not self.relearn_lr > 0:
            raise InputError(f"relearn_lr must be > 0, got {self.relearn_lr}", source=_where("relearn_lr"))
        for name in ("alpha", "min_base_accuracy"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                raise InputError(f"{name} must lie in [0, 1], got {v}", source=_where(name))
        self.prompt_format()  # validates the template
        from unpact.keytokens import stop_list

        stop_list(self.stop_words)  # a known language code or a readable file
        if self.attacks is not None:
            from unpact.attacks import get_attack

            for a in self.attacks:
                if a != "plain":
                    get_attack(a)  # raises with the list of valid names
        if not 0 < self.band <= 1:
            raise InputError(f"band must lie in (0, 1], got {self.band}", source=_where("band"), fix="e.g. 0.9")
        if not self.methods:
            raise InputError("methods is empty", source=_where("methods"), fix="name at least one unlearning method")

    # ----- views ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every setting."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["rule"] = self.rule.to_dict()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AuditConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown audit settings {unknown}", fix=f"valid settings: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("rule"), Mapping):
            d["rule"] = VerdictRule.from_dict(d["rule"])
        return cls(**d)

    def replace(self, **changes: Any) -> AuditConfig:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def resume_settings(self) -> dict[str, Any]:
        """The settings that are part of the resume key (see the module docstring)."""
        d = self.to_dict()
        return {f.name: d[f.name] for f in dataclasses.fields(self) if f.metadata.get("resume", True)}

    def with_preset_limits(self) -> AuditConfig:
        """For the toy world: item limits the user left unset take the preset's values."""
        limits = PRESET_LIMITS[self.preset]
        return self.replace(**{k: v for k, v in limits.items() if getattr(self, k) is None})

    def prompt_format(self, own: PromptFormat | None = None) -> PromptFormat:
        """The prompt format in effect: the fields these settings give, over the model's own format.

        Args:
            own: The base model's own format (default: the bare question).

        Raises:
            InputError: A template without ``{question}``, or a system prompt without the chat template.
        """
        own = own if own is not None else PromptFormat()
        given: dict[str, Any] = {
            "template": self.template,
            "answer_sep": self.answer_sep,
            "chat": True if self.chat_template else None,
            "system_prompt": self.system_prompt,
        }
        changes = {k: v for k, v in given.items() if v is not None}
        if changes.get("system_prompt") is not None:
            changes.setdefault("chat", True if self.chat_template else own.chat)
        return own.replace(**changes) if changes else own

    @property
    def retain_attacked(self) -> int:
        """``n_retain_attacked`` with its default applied."""
        return DEFAULT_RETAIN_ATTACKED if self.n_retain_attacked is None else self.n_retain_attacked


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(AuditConfig)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _where(name: str) -> str:
    return f"setting {name!r} ({_flag(name)})"


def _strip_optional(hint: Any) -> Any:
    """``X`` of ``X | None`` (any other hint unchanged)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Raise :class:`InputError` when ``value`` does not fit the field's type (a string for a list...)."""
    if value is None and type(None) in typing.get_args(hint):
        return
    hint = _strip_optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise InputError(f"{name} must be one of {list(args)}, got {value!r}", source=_where(name))
        return
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise InputError(
                f"{name} must be a list of names, got {value!r}",
                source=_where(name),
                fix=f"e.g. {name}=('a', 'b') in Python or {_flag(name)} a,b on the command line",
            )
        return
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise InputError(
            f"{name} must be {getattr(hint, '__name__', hint)}, got {type(value).__name__} {value!r}",
            source=_where(name),
        )


# ----- the command line ------------------------------------------------------------------------
def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per :class:`AuditConfig` setting (defaults shown in the help)."""
    hints = _hints()
    defaults = AuditConfig()
    for f in dataclasses.fields(AuditConfig):
        if not f.metadata.get("cli", True):
            continue
        core = _strip_optional(hints[f.name])
        default = getattr(defaults, f.name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        help_text = f"{f.metadata['help']} (default: {shown})" if default is not None else f.metadata["help"]
        kw: dict[str, Any] = {"default": None, "help": help_text, "dest": f.name}
        if core is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(core) is Literal:
            kw["choices"] = list(typing.get_args(core))
        elif typing.get_origin(core) is tuple:
            kw["type"], kw["metavar"] = _names, "A,B"
        else:
            kw["type"] = core
        parser.add_argument(_flag(f.name), **kw)


def from_namespace(ns: argparse.Namespace, **overrides: Any) -> AuditConfig:
    """The :class:`AuditConfig` of parsed arguments: options not given keep their defaults."""
    given = {
        f.name: getattr(ns, f.name) for f in dataclasses.fields(AuditConfig) if getattr(ns, f.name, None) is not None
    }
    return AuditConfig(**{**given, **overrides})

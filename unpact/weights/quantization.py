"""The quantization attack: does rounding an unlearned model's weights bring the forgotten answers back?

Zhang et al. (ICLR 2025, arXiv 2410.16454) found that quantizing an unlearned model to 4 bits restores
most forgotten answers: unlearning moves each weight by much less than half a quantization bin, so
the unlearned weight and the base weight round to the same code, and the quantized unlearned model
is (nearly) the quantized base model. The control is the quantized retain-only model.

:func:`quantize` returns a new :class:`~unpact.models.Subject` whose block weights are replaced by
their round-to-nearest (RTN) quantized values, stored dequantized in the model's own dtype (weight-only
"fake" quantization: what a weight-only int8/int4 deployment computes with), and a :class:`QuantReport`
with the share of parameters quantized and, given the base model, the share of codes unlearning left
unchanged (:func:`code_agreement`).

The reference RTN (:func:`quant_codes`), for a weight ``w`` of shape ``(in, out)``, per output channel
(``group_size=None``) or per group of ``group_size`` consecutive input features of one output channel:

* symmetric: ``scale = max|w| / (2**(bits-1) - 1)``, ``code = clamp(round(w / scale), -2**(bits-1),
  2**(bits-1) - 1)``, ``zero = 0``;
* asymmetric: ``scale = (max w - min w) / (2**bits - 1)``, ``zero = min w`` (a float offset: the value
  of code 0), ``code = clamp(round((w - zero) / scale), 0, 2**bits - 1)``;
* dequantized: ``code * scale + zero``. Rounding is half-to-even (``torch.round``); the arithmetic is
  float32; a zero-width group gets the smallest positive scale, so it is kept exactly.

This is optimum-quanto's arithmetic (``qint8``: absmax / 127 per channel; ``qint4``/``qint2``: affine
with a float shift), so ``backend="quanto"`` gives bit-identical weights on float32 models for the
schemes it has. ``backend="torchao"`` uses torchao's ``IntxWeightOnlyConfig``, whose conventions
differ: symmetric ``scale = max|w| / (2**(bits-1) - 0.5)`` (so ``+max|w|`` is clipped to the top
code), asymmetric ranges widened to include 0 with an integer zero point. Both libraries only see
``nn.Linear``: GPT-2's ``Conv1D`` blocks stay in full precision unless ``convert_conv1d=True``; the
report's ``share_quantized`` says how much was quantized.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from unpact._arch import _stores_in_out, weight_in_out
from unpact._result import SavedResult
from unpact.errors import InputError, UnknownNameError, UnsupportedFeatureError
from unpact.models import Subject
from unpact.provenance import Provenance

logger = logging.getLogger(__name__)

__all__ = [
    "QuantScheme",
    "DEFAULT_SCHEMES",
    "QuantReport",
    "quant_codes",
    "fake_quantize",
    "quantizable",
    "quantize",
    "code_agreement",
]

Backend = Literal["reference", "quanto", "torchao"]
BACKENDS: tuple[str, ...] = ("reference", "quanto", "torchao")


@dataclass(frozen=True)
class QuantScheme:
    """A round-to-nearest weight quantization scheme.

    Attributes:
        bits: Bits per weight, 2 to 8 (8 and 4 are what deployments use).
        group_size: ``None``: one scale per output channel; else one scale per ``group_size``
            consecutive input features of each output channel (it must divide every layer's input width).
        symmetric: Symmetric (zero point 0, scale from ``max|w|``) or asymmetric (scale and offset
            from ``min w`` and ``max w``).

    Raises:
        InputError: ``bits`` outside 2..8 or a ``group_size`` that is not a positive integer.
    """

    bits: int
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise InputError(f"bits must be an integer from 2 to 8, got {self.bits!r}", source="QuantScheme")
        g = self.group_size
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g < 1):
            raise InputError(
                f"group_size must be a positive integer or None, got {g!r}",
                source="QuantScheme",
                fix="e.g. group_size=32, or None for one scale per output channel",
            )

    def name(self) -> str:
        """A short name: ``"int8-channel"``, ``"int4-g32"``, ``"int4-g32-asym"``."""
        grain = "channel" if self.group_size is None else f"g{self.group_size}"
        return f"int{self.bits}-{grain}" + ("" if self.symmetric else "-asym")


DEFAULT_SCHEMES: tuple[QuantScheme, ...] = (QuantScheme(8), QuantScheme(4), QuantScheme(4, group_size=32))
"""int8 and int4 per output channel, and int4 with groups of 32 input features. 32 divides every
width from 64 (the toy worlds) to 4096 and beyond (GPT-2's 3072, Llama's 11008, 14336); deployments
often use 128 (GPTQ / AWQ), which does not divide d_model 64. Smaller groups give finer bins, so
g32 is the harder setting for the attack: fewer unlearning updates stay inside one bin."""


def _check_groups(shape: torch.Size, group_size: int | None) -> int:
    """The group length for a weight of ``shape`` ``(in, out)``; raises InputError if it does not divide ``in``."""
    g = shape[0] if group_size is None else group_size
    if len(shape) != 2 or shape[0] % g:
        raise InputError(
            f"cannot quantize a weight of shape {tuple(shape)} in groups of {g} input features",
            source="quantize",
            fix="pick a group_size that divides every layer's input width (e.g. 32), or group_size=None",
        )
    return g


def _grouped(w: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``(in, out)`` -> float32 ``(n_groups, group, out)``; ``n_groups = 1`` per channel."""
    g = _check_groups(w.shape, group_size)
    return w.detach().float().reshape(w.shape[0] // g, g, w.shape[1])


def _params(wg: torch.Tensor, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero, each ``(n_groups, out)`` float32, of a grouped weight ``(n_groups, group, out)``."""
    tiny = torch.finfo(torch.float32).tiny
    if scheme.symmetric:
        scale = wg.abs().amax(dim=1) / (2 ** (scheme.bits - 1) - 1)
        return scale.clamp_min(tiny), torch.zeros_like(scale)
    lo, hi = wg.amin(dim=1), wg.amax(dim=1)
    return ((hi - lo) / (2**scheme.bits - 1)).clamp_min(tiny), lo


def _encode(wg: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """Codes ``(n_groups, group, out)`` int16 of a grouped weight under the given scale and zero."""
    if scheme.symmetric:
        q, lo, hi = wg / scale[:, None], -(2 ** (scheme.bits - 1)), 2 ** (scheme.bits - 1) - 1
    else:
        q, lo, hi = (wg - zero[:, None]) / scale[:, None], 0, 2**scheme.bits - 1
    return torch.round(q).clamp_(lo, hi).to(torch.int16)


def quant_codes(weight_in_out: torch.Tensor, scheme: QuantScheme) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest codes of one weight matrix (the reference arithmetic, see the module docstring).

    Args:
        weight_in_out: ``(in, out)`` weight (:func:`unpact._arch.weight_in_out` gives it for
            ``nn.Linear`` and ``Conv1D``).
        scheme: The quantization scheme.

    Returns:
        ``(codes, scale, zero)``: codes ``(in, out)`` int16; scale and zero ``(n_groups, out)``
        float32 with ``n_groups = in // group_size`` (1 per channel). Row ``i`` of the weight belongs
        to group ``i // group_size``; its value is ``codes * scale[group] + zero[group]``.

    Raises:
        InputError: The weight is not 2-D or ``group_size`` does not divide ``in``.
    """
    wg = _grouped(weight_in_out, scheme.group_size)
    scale, zero = _params(wg, scheme)
    return _encode(wg, scale, zero, scheme).reshape(weight_in_out.shape), scale, zero


def _dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``(in, out)`` float32 values of codes ``(in, out)`` under scale and zero ``(n_groups, out)``."""
    n_groups, out = scale.shape
    cg = codes.reshape(n_groups, -1, out).float()
    return (cg * scale[:, None] + zero[:, None]).reshape(codes.shape)


def fake_quantize(weight_in_out: torch.Tensor, scheme: QuantScheme) -> torch.Tensor:
    """The dequantized round-to-nearest values of a weight: what a weight-only deployment computes with.

    Args:
        weight_in_out: ``(in, out)`` weight.
        scheme: The quantization scheme.

    Returns:
        ``(in, out)`` tensor of the weight's dtype and device; ``|w - result| <= scale / 2`` per element.
    """
    codes, scale, zero = quant_codes(weight_in_out, scheme)
    return _dequantize(codes, scale, zero).to(weight_in_out.dtype)


def _linear_like(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    is_linear = isinstance(module, nn.Linear) or _stores_in_out(module)
    return is_linear and isinstance(weight, torch.Tensor) and weight.ndim == 2


def quantizable(model: Subject, *, include_head: bool = False) -> list[tuple[str, nn.Module]]:
    """The layers a weight-only deployment quantizes: every ``nn.Linear`` and ``Conv1D`` inside the blocks.

    As in weight-only int8/int4 deployments (GPTQ, AWQ, bitsandbytes, quanto's transformers integration),
    the token and position embeddings, the norms, the biases and by default the unembedding
    (``lm_head``) keep full precision. GPT-2 ties ``lm_head`` to the token embedding: with
    ``include_head=True`` quantizing it quantizes that embedding too.

    Args:
        model: The subject.
        include_head: Also quantize the unembedding (when it is a linear layer).

    Returns:
        ``(name, module)`` pairs in model order; names as in ``model.model.named_modules()``.

    Raises:
        InputError: ``model`` is not a :class:`~unpact.models.Subject`.
    """
    if not isinstance(model, Subject):
        raise InputError(
            f"expected a Subject, got {type(model).__name__}", source="quantizable", fix="wrap it: unpact.load_model"
        )
    inside = {id(m) for block in model.blocks for m in block.modules()}
    if include_head:
        inside.add(id(model.unembed))
    return [(n, m) for n, m in model.model.named_modules() if id(m) in inside and _linear_like(m)]


@dataclass
class QuantReport(SavedResult):
    """What :func:`quantize` did (saved by :class:`~unpact._result.SavedResult`).

    Attributes:
        scheme: :meth:`QuantScheme.name`.
        backend: ``"reference"``, ``"quanto"`` or ``"torchao"``.
        n_params_total: Parameters of the model (tied tensors once).
        n_params_quantized: Weights replaced by quantized values.
        layers: Names of the quantized layers.
        code_agreement: Share of the quantized weights whose code equals the reference model's code
            (:func:`code_agreement`); ``None`` without a reference.
        code_agreement_own_scales: The same, each model encoded with its own scales
            (``code_agreement(..., own_scales=True)``); ``None`` without a reference.
        skipped: Quantizable layers the backend left in full precision (a library's ``Conv1D``).
        provenance: The quantized model, its weights hash and the arguments.
    """

    scheme: str
    backend: str
    n_params_total: int
    n_params_quantized: int
    layers: list[str]
    code_agreement: float | None = None
    code_agreement_own_scales: float | None = None
    skipped: list[str] = field(default_factory=list)
    provenance: Provenance | None = None

    @property
    def share_quantized(self) -> float:
        """``n_params_quantized / n_params_total``."""
        return self.n_params_quantized / self.n_params_total if self.n_params_total else 0.0


def _library(backend: str, scheme: QuantScheme) -> Any:
    """Import a library backend and check it has ``scheme``: optimum-quanto's ``quanto`` or ``torchao.quantization``.

    Raises:
        InputError: The library is not installed.
        UnsupportedFeatureError: The library does not have the scheme.
    """
    package = {"quanto": "optimum-quanto", "torchao": "torchao"}[backend]
    try:
        if backend == "quanto":
            from optimum import quanto as lib
        else:
            import torchao.quantization as lib
    except ImportError as exc:
        fix = "pip install 'unpact[quant]'" if backend == "quanto" else "pip install torchao"
        raise InputError(f"backend={backend!r} needs the {package} package", source="quantize", fix=fix) from exc
    why = fix = ""
    if backend == "quanto" and scheme.bits not in (2, 4, 8):
        why, fix = "it has int2, int4 and int8 only", "use backend='reference' or 'torchao'"
    elif backend == "quanto" and scheme.bits == 8 and (not scheme.symmetric or scheme.group_size is not None):
        why, fix = "its int8 is symmetric per output channel", "use QuantScheme(8), or backend='torchao'"
    elif backend == "quanto" and scheme.bits < 8 and scheme.symmetric:
        why, fix = "its int2 / int4 are asymmetric", f"use QuantScheme({scheme.bits}, symmetric=False), or 'torchao'"
    if why:
        raise UnsupportedFeatureError(f"{package} cannot quantize {scheme.name()}: {why}", source="quantize", fix=fix)
    return lib


def _quanto(lib: Any, holder: nn.ModuleDict, scheme: QuantScheme) -> bool:
    """Quantize ``holder["layer"]`` with optimum-quanto; False when the library skips it."""
    lib.quantize(holder, weights={8: lib.qint8, 4: lib.qint4, 2: lib.qint2}[scheme.bits])
    layer = holder["layer"]
    if not isinstance(layer, lib.QModuleMixin):
        return False
    if scheme.bits < 8:  # quanto picks its own group size (128, lowered in steps of 32): use the scheme's
        layer.weight_group_size = scheme.group_size
    lib.freeze(holder)
    return True


def _torchao(lib: Any, holder: nn.ModuleDict, scheme: QuantScheme) -> bool:
    """Quantize ``holder["layer"]`` with torchao's ``IntxWeightOnlyConfig``; False when the library skips it."""
    from torchao.quantization.granularity import PerAxis, PerGroup

    config = lib.IntxWeightOnlyConfig(
        weight_dtype=getattr(torch, f"int{scheme.bits}"),
        granularity=PerAxis(0) if scheme.group_size is None else PerGroup(scheme.group_size),
        mapping_type=lib.MappingType.SYMMETRIC if scheme.symmetric else lib.MappingType.ASYMMETRIC,
    )
    before = type(holder["layer"].weight)
    lib.quantize_(holder, config)
    return type(holder["layer"].weight) is not before


def _library_in_out(
    lib: Any, module: nn.Module, scheme: QuantScheme, backend: str, convert_conv1d: bool
) -> torch.Tensor | None:
    """The library's dequantized ``(in, out)`` weight of one layer (quantized on a copy), or ``None`` if skipped."""
    if _stores_in_out(module) and convert_conv1d:  # the same map as nn.Linear with the weight transposed
        w = weight_in_out(module).detach()
        linear = nn.Linear(w.shape[0], w.shape[1], bias=False, dtype=w.dtype, device=w.device)
        linear.weight.data.copy_(w.T)
        layer: nn.Module = linear
    else:
        layer = copy.deepcopy(module)
    holder = nn.ModuleDict({"layer": layer})
    if not (_quanto if backend == "quanto" else _torchao)(lib, holder, scheme):
        return None
    q: Any = holder["layer"]
    values = q.weight.dequantize().detach()
    return values if _stores_in_out(q) else values.T


def quantize(
    subject: Subject,
    scheme: QuantScheme,
    *,
    backend: Backend = "reference",
    reference: Subject | None = None,
    include_head: bool = False,
    convert_conv1d: bool = False,
) -> tuple[Subject, QuantReport]:
    """Quantize a copy of the model's block weights (weight-only, round-to-nearest, stored dequantized).

    The input subject is left as it was (weights, modes, flags: the work is on a deep copy).

    Args:
        subject: The model (e.g. an unlearned one).
        scheme: The quantization scheme (see :data:`DEFAULT_SCHEMES`).
        backend: ``"reference"`` (:func:`fake_quantize`, every :func:`quantizable` layer),
            ``"quanto"`` (optimum-quanto: int8 symmetric per channel, int2/int4 asymmetric; the
            ``quant`` extra) or ``"torchao"`` (``IntxWeightOnlyConfig``: every scheme). The libraries
            quantize ``nn.Linear`` layers only; the layers they skip keep full precision and are listed in
            ``report.skipped``.
        reference: The base model: fills ``report.code_agreement`` and ``code_agreement_own_scales``
            over the quantized layers (always with the reference arithmetic; ``None`` if none was quantized).
        include_head: Also quantize the unembedding (see :func:`quantizable`).
        convert_conv1d: Hand ``Conv1D`` layers to a library as ``nn.Linear`` (transposed) so it quantizes them.

    Returns:
        ``(quantized, report)``: a new :class:`~unpact.models.Subject` named
        ``f"{subject.name}+{scheme.name()}"`` with the subject's tokenizer, architecture map and prompt
        format; and the :class:`QuantReport`.

    Raises:
        InputError: Not a subject or scheme, a group size that does not divide a layer's input width,
            a reference with other layers, or a library that is not installed.
        UnknownNameError: An unknown backend.
        UnsupportedFeatureError: A scheme the chosen library does not have.
    """
    if not isinstance(scheme, QuantScheme):
        raise InputError(
            f"expected a QuantScheme, got {type(scheme).__name__}", source="quantize", fix="QuantScheme(4)"
        )
    if backend not in BACKENDS:
        raise UnknownNameError(
            f"unknown backend {backend!r}", source="quantize", fix=f"use one of {', '.join(BACKENDS)}"
        )
    originals = quantizable(subject, include_head=include_head)
    for _, module in originals:
        _check_groups(weight_in_out(module).shape, scheme.group_size)
    lib = None if backend == "reference" else _library(backend, scheme)
    model = copy.deepcopy(subject.model)
    copies = dict(model.named_modules())
    done: list[str] = []
    skipped: list[str] = []
    n_quantized = 0
    for name, module in originals:
        if backend == "reference":
            values: torch.Tensor | None = fake_quantize(weight_in_out(module), scheme)
        else:
            values = _library_in_out(lib, module, scheme, backend, convert_conv1d)
        if values is None:
            skipped.append(name)
            continue
        target = weight_in_out(copies[name])
        with torch.no_grad():
            target.copy_(values.to(target.dtype))
        done.append(name)
        n_quantized += target.numel()
    if skipped:
        hint = "" if convert_conv1d else "; pass convert_conv1d=True to hand it Conv1D layers"
        msg = "%s left %d of %d quantizable layers of %s in full precision (%s, ...): it quantizes nn.Linear only%s"
        logger.warning(msg, backend, len(skipped), len(originals), subject.name, skipped[0], hint)
    new = Subject(
        model=model,
        tokenizer=subject.tokenizer,
        spec=subject.spec,
        name=f"{subject.name}+{scheme.name()}",
        prompt_format=subject.prompt_format,
    )
    agree = own = None
    if reference is not None and done:
        kw: dict[str, Any] = dict(include_head=include_head, layers=done)
        agree, own = (
            code_agreement(subject, reference, scheme, **kw),
            code_agreement(subject, reference, scheme, own_scales=True, **kw),
        )
    args = dict(parent=subject.name, scheme=scheme.name(), backend=backend, include_head=include_head)
    args.update(convert_conv1d=convert_conv1d, reference=None if reference is None else reference.name)
    report = QuantReport(
        scheme=scheme.name(),
        backend=backend,
        n_params_total=sum(p.numel() for p in model.parameters()),
        n_params_quantized=n_quantized,
        layers=done,
        code_agreement=agree,
        code_agreement_own_scales=own,
        skipped=skipped,
        provenance=Provenance.of(new, "quantize", **args),
    )
    logger.info("quantized %s: %s, %.1f%% of parameters", new.name, backend, 100 * report.share_quantized)
    return new, report


def code_agreement(
    a: Subject,
    b: Subject,
    scheme: QuantScheme,
    *,
    include_head: bool = False,
    layers: list[str] | None = None,
    own_scales: bool = False,
) -> float:
    """Share of ``a``'s quantizable weights whose code equals ``b``'s code (``b``'s scales by default).

    Per layer, ``b`` (the reference, e.g. the base model) fixes the scale and zero of every group
    (:func:`quant_codes`); ``a``'s weights are encoded with those same parameters and compared with
    ``b``'s codes; layers count by their number of weights. This is the paper's mechanism: an update
    smaller than the distance to the bin edge (at most half a bin) leaves the code unchanged. With
    ``own_scales=True`` each model is encoded with its own scales and zeros instead (what two
    deployments hold: equal codes, and values equal up to the scales' difference).

    Args:
        a: The model to test (e.g. unlearned).
        b: The reference model (e.g. the base).
        scheme: The quantization scheme.
        include_head: Also compare the unembedding.
        layers: Compare only these layers (names from :func:`quantizable`).
        own_scales: Encode ``a`` with its own scales and zeros.

    Returns:
        A share in ``[0, 1]``; 1.0 for a model with itself.

    Raises:
        InputError: The models do not have the same quantizable layers and shapes.
    """
    if not isinstance(a, Subject):
        raise InputError(f"expected a Subject, got {type(a).__name__}", source="code_agreement")
    mods_b, mods_a = dict(quantizable(b, include_head=include_head)), dict(a.model.named_modules())
    names = list(mods_b) if layers is None else list(layers)
    if not names:
        raise InputError(f"no layers to compare between {a.name!r} and {b.name!r}", source="code_agreement")
    same = total = 0
    for name in names:
        if name not in mods_b or name not in mods_a or not _linear_like(mods_a[name]):
            raise InputError(
                f"layer {name!r} is not a quantizable layer of both {a.name!r} and {b.name!r}",
                source="code_agreement",
                fix="compare models of the same architecture (an unlearned model and its base)",
            )
        wa, wb = weight_in_out(mods_a[name]), weight_in_out(mods_b[name])
        if wa.shape != wb.shape:
            shapes = f"{tuple(wa.shape)} in {a.name!r} but {tuple(wb.shape)} in {b.name!r}"
            raise InputError(f"layer {name!r} has shape {shapes}", source="code_agreement")
        gb, ga = _grouped(wb, scheme.group_size), _grouped(wa, scheme.group_size)
        scale, zero = _params(gb, scheme)
        codes_b = _encode(gb, scale, zero, scheme)
        codes_a = _encode(ga, *(_params(ga, scheme) if own_scales else (scale, zero)), scheme)
        same += int((codes_a == codes_b).sum())
        total += codes_b.numel()
    return same / total

"""Models split over devices: where each module runs, device maps, memory limits and disk offload.

A model loaded with a ``device_map`` (through accelerate) has its blocks on different devices, and
modules offloaded to the CPU or disk hold ``meta`` parameters outside their forward. The tracers
never ask "where is the model?" but "where does *this* module run?": :func:`module_device` answers
that, from accelerate's hook (its ``execution_device``) when there is one, else from the module's
own parameters. Hooks move what they write to the hooked module's device, and results are gathered
on one device (:func:`gather`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unpact.errors import InputError, UnsupportedFeatureError

__all__ = [
    "module_device",
    "gather",
    "param_value",
    "state_items",
    "disk_modules",
    "require_gradients",
    "parse_device_map",
    "parse_max_memory",
    "check_accelerate",
    "dispatch",
    "torch_dtype",
    "check_device",
    "check_placement",
]

_AUTO_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B)\s*$", re.IGNORECASE)


def _as_device(value: Any) -> torch.device:
    """``torch.device`` of an accelerate device spec (an int is a CUDA index)."""
    if isinstance(value, torch.device):
        return value
    if isinstance(value, int):
        return torch.device("cuda", value)
    return torch.device(str(value))


def module_device(module: nn.Module) -> torch.device:
    """The device ``module``'s forward runs on, where a hook writing into it must put its tensors.

    With accelerate's hook on the module (a ``device_map`` load), its ``execution_device``: also
    right for offloaded modules whose parameters sit on ``meta`` between forwards. Otherwise the
    device of its first parameter (then buffer) that is not ``meta``, else the CPU.

    Args:
        module: Any module of the model (a block, the embedding, a projection...).

    Returns:
        The device.
    """
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is None:  # a SequentialHook holds several
        for h in getattr(hook, "hooks", ()) or ():
            dev = getattr(h, "execution_device", None)
            if dev is not None:
                break
    if isinstance(dev, Mapping):  # a per-tensor map: any of its devices is where the module computes
        dev = next(iter(dev.values()), None)
    if dev is not None:
        return _as_device(dev)
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


def param_value(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The value of ``module``'s parameter ``name``, read from accelerate's offload map when it sits on ``meta``.

    An offloaded module (``device_map`` entry ``"cpu"`` next to GPUs, or ``"disk"``) keeps ``meta``
    parameters between forwards; its hook's ``weights_map`` holds the real ones.

    Args:
        module: The module owning the parameter (e.g. an attention output projection).
        name: The parameter's name in it.

    Returns:
        The tensor (on the CPU for offloaded weights; detached for those).
    """
    t: torch.Tensor = getattr(module, name)
    if t.device.type != "meta":
        return t
    wmap = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    try:
        return wmap[name] if wmap is not None else t
    except KeyError:
        return t


def state_items(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``model.state_dict().items()`` with offloaded (``meta``) tensors read from accelerate's offload maps."""
    out = []
    for name, t in model.state_dict().items():
        if t.device.type == "meta":
            owner, _, leaf = name.rpartition(".")
            try:
                t = param_value(model.get_submodule(owner) if owner else model, leaf)
            except AttributeError:
                pass
        out.append((name, t))
    return out


def gather(tensors: Sequence[torch.Tensor], device: torch.device | None = None) -> list[torch.Tensor]:
    """``tensors`` all on ``device`` (default: the first one's), for a ``cat``/``stack`` over layers.

    Args:
        tensors: Tensors that may live on different devices (activations of blocks on several GPUs).
        device: Where to gather them.

    Returns:
        The tensors, moved where needed (no copy for those already there).
    """
    if not tensors:
        return []
    dev = device if device is not None else tensors[0].device
    return [t if t.device == dev else t.to(dev) for t in tensors]


def disk_modules(model: nn.Module) -> list[str]:
    """Names of the modules a ``device_map`` put on ``"disk"`` (``model.hf_device_map``), in order."""
    dmap = getattr(model, "hf_device_map", None) or {}
    return [name or "(the whole model)" for name, dev in dmap.items() if str(dev) == "disk"]


def require_gradients(model: nn.Module, method: str) -> None:
    """Refuse a gradient method on a model with disk-offloaded modules.

    Args:
        model: The model (``subject.model``).
        method: What needs the gradients, for the message (e.g. ``"integrated gradients"``).

    Raises:
        UnsupportedFeatureError: Some module is offloaded to disk: backward through weights that are
            read back from disk for every forward is not supported.
    """
    on_disk = disk_modules(model)
    if on_disk:
        shown = ", ".join(on_disk[:3]) + (f" and {len(on_disk) - 3} more" if len(on_disk) > 3 else "")
        raise UnsupportedFeatureError(
            f"{method} needs gradients, but the device map offloads {shown} to disk",
            source="device_map",
            fix="load the model without 'disk' entries: give more memory (max_memory={'cpu': ...}), a smaller "
            "dtype (bfloat16) or more devices; forward-only methods (lens, leave-one-out, attacks' generation) "
            "run with disk offload",
        )


def parse_device_map(text: str | Mapping[str, Any] | None) -> str | dict[str, Any] | None:
    """A ``--device-map`` value: ``auto`` (or another accelerate strategy), a JSON file, or inline JSON.

    Args:
        text: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``, a path to a JSON
            file holding ``{module name: device}``, that JSON inline, or an already-parsed mapping.

    Returns:
        The strategy name or the ``{module name: device}`` dict (``None`` passes through).

    Raises:
        InputError: Neither a strategy, a readable JSON file nor a JSON object.
    """
    if text is None or isinstance(text, Mapping):
        return None if text is None else dict(text)
    value = str(text).strip()
    if value in _AUTO_MAPS:
        return value
    source = "--device-map"
    raw = value
    if not value.startswith("{"):
        if not Path(value).is_file():
            raise InputError(
                f"device map {value!r} is neither a strategy, a JSON file nor inline JSON",
                source=source,
                fix=f"give one of {', '.join(_AUTO_MAPS)}, a JSON file, or e.g. "
                '\'{"model.embed_tokens": 0, "model.layers.0": 0, "lm_head": "cpu"}\'',
            )
        raw = Path(value).read_text(encoding="utf-8")
        source = f"--device-map file {value}"
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"the device map is not valid JSON ({exc})", source=source, fix="fix the JSON") from exc
    if not isinstance(parsed, dict) or not all(isinstance(v, (int, str)) for v in parsed.values()):
        raise InputError(
            "a device map must be a JSON object {module name: device}",
            source=source,
            fix='map module names to devices: 0, "cuda:1", "cpu" or "disk"',
        )
    return parsed


def parse_max_memory(text: str | Mapping[Any, Any] | None) -> dict[int | str, str] | None:
    """A ``--max-memory`` value such as ``0=20GiB,cpu=60GiB`` as accelerate's ``max_memory`` dict.

    Args:
        text: Comma-separated ``device=size`` pairs (device: a GPU index, ``cpu`` or ``disk``; size
            like ``20GiB`` / ``500MB``), or an already-parsed mapping.

    Returns:
        ``{0: "20GiB", "cpu": "60GiB"}`` (``None`` passes through).

    Raises:
        InputError: A pair without ``=``, an unknown device or an unreadable size.
    """
    if text is None or isinstance(text, Mapping):
        return None if text is None else dict(text)
    out: dict[int | str, str] = {}
    for part in (p for p in str(text).split(",") if p.strip()):
        key, sep, size = part.partition("=")
        key, size = key.strip(), size.strip()
        fix = "write device=size pairs, e.g. --max-memory 0=20GiB,1=20GiB,cpu=60GiB"
        if not sep or not _MEMORY_RE.match(size):
            raise InputError(f"cannot read {part.strip()!r} as device=size", source="--max-memory", fix=fix)
        dev = key.removeprefix("cuda:")
        if dev.isdigit():
            out[int(dev)] = size
        elif dev in ("cpu", "disk", "mps"):
            out[dev] = size
        else:
            raise InputError(f"unknown device {key!r} in {part.strip()!r}", source="--max-memory", fix=fix)
    return out or None


def check_accelerate(option: str) -> None:
    """Raise if accelerate (which places a model by a device map) is not installed.

    Raises:
        InputError: Naming ``option`` and the package to install.
    """
    try:
        import accelerate  # noqa: F401
    except ImportError as exc:
        raise InputError(
            f"{option} needs the accelerate package, which is not installed",
            source=option,
            fix="pip install accelerate (or load the model on one device with device=...)",
        ) from exc


def dispatch(
    model: nn.Module,
    device_map: str | dict[str, Any],
    max_memory: dict[int | str, str] | None,
    offload_folder: str | os.PathLike[str] | None,
) -> nn.Module:
    """Place an already-built model by ``device_map`` (accelerate's ``dispatch_model``).

    Args:
        model: The Hugging Face causal LM.
        device_map: A strategy (``"auto"``...) or ``{module name: device}``.
        max_memory: Per-device limits for a strategy.
        offload_folder: Where ``"disk"`` entries are written.

    Returns:
        The same model, with accelerate's hooks moving each module's inputs to its device.
    """
    from accelerate import dispatch_model, infer_auto_device_map

    dmap: Any = device_map
    if isinstance(device_map, str):
        no_split = list(getattr(model, "_no_split_modules", None) or [])
        dmap = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split)
    if any(str(v) == "disk" for v in dmap.values()) and offload_folder is None:
        raise InputError(
            "the device map puts modules on 'disk' but no offload folder is given",
            source="device_map",
            fix="pass offload_folder=<a directory> (CLI: --offload-folder), or give more memory",
        )
    dispatch_model(model, device_map=dmap, offload_dir=None if offload_folder is None else str(offload_folder))
    model.hf_device_map = dict(dmap)  # type: ignore[assignment]
    return model


def torch_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``dtype`` as a ``torch.dtype`` (``"bfloat16"`` and ``"torch.bfloat16"`` both read).

    Raises:
        InputError: Not a torch dtype name.
    """
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise InputError(f"unknown dtype {dtype!r}", source="dtype", fix="use float32, float16 or bfloat16")
        return value
    return dtype


def check_device(device: str | torch.device | None) -> None:
    """Raise if ``device`` is not a device torch can use here.

    Raises:
        InputError: An unreadable device, or CUDA asked for where there is none.
    """
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r} ({exc})", source="device", fix="use cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} asked for, but torch sees no CUDA device here", source="device", fix="use device='cpu'"
        )


def check_placement(
    device: str | torch.device | None, device_map: Any, max_memory: Any
) -> tuple[str | dict[str, Any] | None, dict[int | str, str] | None]:
    """Validate ``load_model``'s placement options; return the parsed device map and memory limits.

    Raises:
        InputError: An unusable device, both ``device`` and ``device_map``, ``max_memory`` without
            a device map, or a device map without accelerate installed.
    """
    check_device(device)
    dmap, memory = parse_device_map(device_map), parse_max_memory(max_memory)
    if dmap is not None and device is not None:
        raise InputError(
            f"both device={str(device)!r} and a device_map were given",
            source="device / device_map",
            fix="give one: device puts the whole model on one device, device_map spreads it over several",
        )
    if memory is not None and dmap is None:
        raise InputError(
            "max_memory limits where a device_map strategy places modules, but no device_map was given",
            source="max_memory",
            fix="add device_map='auto' (CLI: --device-map auto)",
        )
    if dmap is not None:
        check_accelerate("device_map")
    if isinstance(dmap, dict):
        for name, dev in dmap.items():
            if str(dev) not in ("cpu", "disk") and _as_device(dev).type == "cuda" and not torch.cuda.is_available():
                raise InputError(
                    f"the device map puts {name or 'the model'!r} on {dev!r}, but torch sees no CUDA device here",
                    source="device_map",
                    fix="map it to 'cpu' (or 'disk'), or run where the GPU is",
                )
    return dmap, memory

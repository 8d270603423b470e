"""Which device and which budget a stage or trainer runs with.

``device="auto"`` (the default everywhere) picks CUDA when torch sees a CUDA device and the
CPU otherwise; the budget (``preset``) follows the device: the upstream-like ``cuda`` preset
(GaussianAvatars' 600k fitting iterations, VHAP-like tracking, the paper's model sizes) on
CUDA, the small ``cpu`` preset (the demo's budgets, the tiny models) on the CPU. Nothing
is silent: a CPU budget on a machine that has CUDA comes with a one-line warning for the
caller to print, and the CUDA preset without a CUDA device is an :class:`InputError`
(one line, exit code 2 at the command line).

The core never prints: :func:`resolve_device` returns the warning in the plan, and the
command line, ``pointillist run``'s plan and the trainers print or record it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError

__all__ = ["BUDGETS", "DevicePlan", "resolve_device", "preset_config", "cuda_name"]

BUDGETS = ("cpu", "cuda")  # the two budgets every stage and trainer has a preset for


@dataclass(frozen=True)
class DevicePlan:
    """The resolved device and budget of a stage or trainer.

    Attributes:
        device: a torch device string (``cpu``, ``cuda``, ``cuda:1``).
        preset: the budget, ``cpu`` or ``cuda``.
        warning: one line to show the user (a CPU budget on a machine with CUDA), or ``None``.
    """

    device: str
    preset: str
    warning: str | None = None

    def to_dict(self) -> dict[str, str]:
        """``{"device", "preset"}``, the fields stage records and plans carry."""
        return {"device": self.device, "preset": self.preset}


def cuda_name() -> str:
    """The name of the current CUDA device, or ``"no CUDA device"``."""
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"


def resolve_device(device: str = "auto", preset: str = "auto", where: str = "--device",
                   preset_where: str = "--preset") -> DevicePlan:
    """Resolve a requested device and budget against the hardware.

    Args:
        device: ``auto`` (CUDA when ``torch.cuda.is_available()``, else ``cpu``) or a torch
            device (``cpu``, ``cuda``, ``cuda:1``).
        preset: ``auto`` (``cuda`` on a CUDA device, else ``cpu``), ``cpu`` or ``cuda``.
        where, preset_where: what errors name (the option or config field).

    Returns:
        :class:`DevicePlan`; its ``warning`` is set when a ``cpu`` budget or device is used
        on a machine where torch sees CUDA (a toy-sized run where a real one was possible).

    Raises:
        InputError: an unknown device or preset, a CUDA device asked for where torch sees
            none, or the ``cuda`` preset on the CPU.
    """
    if preset not in ("auto", *BUDGETS):
        raise InputError(preset_where, f"unknown preset '{preset}' (auto, {', '.join(BUDGETS)})")
    if device != "auto":
        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            raise InputError(where, f"'{device}' is not 'auto' or a torch device (cpu, cuda, cuda:1)") from None
        if kind not in ("cpu", "cuda"):
            raise InputError(where, f"'{device}': only cpu and cuda devices are supported")
    has_cuda = torch.cuda.is_available()
    dev = ("cuda" if has_cuda else "cpu") if device == "auto" else device
    on_cuda = dev.startswith("cuda")
    if on_cuda and not has_cuda:
        raise InputError(where, f"'{dev}' asked for, but torch {torch.__version__} sees no CUDA device",
                         "use --device auto or cpu (the CPU budget) on this machine")
    budget = ("cuda" if on_cuda else "cpu") if preset == "auto" else preset
    if budget == "cuda" and not on_cuda:
        why = "torch sees no CUDA device" if not has_cuda else f"the device is '{dev}'"
        raise InputError(preset_where, f"the CUDA preset needs a CUDA device ({why})",
                         "use the CPU budget (--device cpu, or --device auto without a CUDA preset)")
    warning = None
    if has_cuda and budget == "cpu":
        warning = (f"CPU budget ({'on the CPU' if not on_cuda else 'on ' + dev}) on a machine with CUDA "
                   f"({cuda_name()}): a toy-sized run; --device auto picks the CUDA preset")
    return DevicePlan(dev, budget, warning)


def preset_config(cls: type, presets: dict[str, Callable[..., Any]], overrides: dict[str, Any],
                  device: str = "auto", preset: str = "auto", where: str = "options",
                  preset_where: str = "--preset") -> tuple[Any, DevicePlan]:
    """A stage config built on the preset of the resolved budget, with ``overrides`` on top.

    A ``device`` field in ``overrides`` (a config file) takes the place of ``device``.

    Args:
        cls: the config dataclass (``TrackingConfig``, ``FittingConfig``).
        presets: ``{"cpu": f, "cuda": f}``, each ``f(**fields) -> cls``.
        overrides: field values to apply over the preset (validated by ``cls``).
        device, preset: as :func:`resolve_device`.
        where: what config errors name; preset_where: what a preset error names.

    Returns:
        ``(config, plan)``; ``config.device`` is ``plan.device``.

    Raises:
        InputError: as :func:`resolve_device`; ConfigError: a bad override.
    """
    from .fileio import build_config

    dev = overrides.get("device", device)
    plan = resolve_device(dev, preset, f"{where}: device" if "device" in overrides else "--device", preset_where)
    base = presets[plan.preset](device=plan.device).to_dict()
    return build_config(cls, {**base, **overrides, "device": plan.device}, where), plan

"""FLOPs per training step, counted from the model, and the times they imply on an H100/H200.

:func:`count_step_flops` runs one forward + backward of a task under
``torch.utils.flop_counter.FlopCounterMode``. Counting needs only shapes, so the expensive ops
(convolutions, matrix products, attention, forward and backward) are answered by
:class:`ShapeOnly` with zero tensors of the shape that op would give (its meta-tensor result):
the count equals the real one (a test checks it on a small model) and a 96^3 step counts in
seconds on a CPU. Everything else runs for real, so the data-dependent parts of a task
(corruption draws, masks, label arithmetic) behave as in training.

The expected times are lower bounds: ``flops / peak`` at the dense bf16 tensor-core peak, and at
40 % of it (a good real-world utilisation for convolutional nets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity): H100 PCIe ~756, H100 SXM / H200 SXM ~989.
PEAK_TFLOPS = {"H100 PCIe bf16 dense": 756.0, "H100/H200 SXM bf16 dense": 989.0}
MAIN_PEAK = "H100/H200 SXM bf16 dense"
UTILISATION = 0.40
PCIE_GB_S = 64.0  # PCIe Gen5 x16, one direction, theoretical

_aten = torch.ops.aten
_SHAPE_ONLY = {
    _aten.convolution.default, _aten._convolution.default, _aten.convolution_backward.default,
    _aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default,
}
for _name in ("_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_efficient_attention_backward",
              "_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_cudnn_attention_backward",
              "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward"):
    _op = getattr(_aten, _name, None)
    if _op is not None:
        _SHAPE_ONLY.add(_op.default)


class ShapeOnly(TorchDispatchMode):
    """Answer the expensive ops with zeros of the right shape, dtype and strides (no arithmetic)."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in _SHAPE_ONLY:
            return func(*args, **kwargs)
        device = next((a.device for a in args if torch.is_tensor(a)), torch.device("cpu"))

        def meta(a: Any) -> Any:
            return a.to("meta") if torch.is_tensor(a) else a

        out = func(*tree_map(meta, args), **tree_map(meta, kwargs))

        def real(m: Any) -> Any:
            if not torch.is_tensor(m):
                return m
            return torch.empty_strided(m.shape, m.stride(), dtype=m.dtype, device=device).zero_()

        return tree_map(real, out)


def count_step_flops(task: torch.nn.Module, batch: dict[str, torch.Tensor], seed: int = 0,
                     shape_only: bool = True) -> int:
    """FLOPs of one training step's forward + backward (the optimizer step is elementwise and not counted)."""
    task.train()
    gen = torch.Generator().manual_seed(seed)
    counter = FlopCounterMode(display=False)
    if shape_only:
        with ShapeOnly(), counter:
            loss = task(batch, generator=gen)["loss"]
            loss.backward()
    else:
        with counter:
            loss = task(batch, generator=gen)["loss"]
            loss.backward()
    task.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def flops_at_batch(make_task: Callable[[], torch.nn.Module], make_batch: Callable[[int], dict[str, torch.Tensor]],
                   batch: int, small: tuple[int, ...] | None = None) -> dict[str, Any]:
    """FLOPs per step at ``batch``: counted there, or counted at the ``small`` batches and extended by the
    polynomial through them (two batches: linear, exact for per-sample work; three: quadratic, exact as well
    for the batch x batch scores of contrastive losses). Keeps host memory small for large inputs."""
    if small is None or batch <= max(small):
        torch.manual_seed(0)
        return {"flops": count_step_flops(make_task(), make_batch(batch)), "counted_at_batch": [batch]}
    counts = []
    for b in small:
        torch.manual_seed(0)
        counts.append(count_step_flops(make_task(), make_batch(b)))
    total = 0.0
    for i, (bi, ci) in enumerate(zip(small, counts, strict=True)):  # Lagrange form of the polynomial
        w = 1.0
        for j, bj in enumerate(small):
            if j != i:
                w *= (batch - bj) / (bi - bj)
        total += w * ci
    return {"flops": int(round(total)), "counted_at_batch": list(small), "counts": counts}


def expectations(flops_per_step: float, batch: int, bytes_per_item: float) -> dict[str, Any]:
    """Expected step time and items/s at the bf16 peak and at 40 % of it; PCIe time per step."""
    peak = PEAK_TFLOPS[MAIN_PEAK] * 1e12
    t_peak = flops_per_step / peak
    t_util = t_peak / UTILISATION
    t_pcie = bytes_per_item * batch / (PCIE_GB_S * 1e9)
    return {
        "flops_per_step": flops_per_step, "tflop_per_step": flops_per_step / 1e12,
        "peak_tflops": PEAK_TFLOPS[MAIN_PEAK], "utilisation": UTILISATION,
        "step_ms_at_peak": 1e3 * t_peak, "step_ms_at_40pct": 1e3 * t_util,
        "items_per_s_at_peak": batch / t_peak if t_peak > 0 else None,
        "items_per_s_at_40pct": batch / t_util if t_util > 0 else None,
        "bytes_per_item": bytes_per_item, "pcie_ms_per_step": 1e3 * t_pcie,
        "pcie_items_per_s": PCIE_GB_S * 1e9 / bytes_per_item if bytes_per_item else None,
    }

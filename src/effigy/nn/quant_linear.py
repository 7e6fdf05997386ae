"""``QuantLinear``: a linear layer whose weights are stored packed at 2..8 bits.

Activations are quantized per token at run time (dynamic) or with a calibrated scale (static).
The matmul runs on one of three paths (see :mod:`effigy.core.kernels`):
  reference - dequantize both operands and use a float matmul (the definition; any bit-width)
  int       - exact int32 accumulation of int8 operands (``torch._int_mm``)
  fbgemm    - PyTorch's fbgemm int8 GEMM, the fast CPU path

Before quantization the input may be channel-balanced (ViDiT-Q / SmoothQuant): divided per input
channel by ``input_divisor`` and, optionally, rotated by an orthonormal Hadamard matrix. The same
transforms are folded into the stored weights, so the float product is unchanged and only the
quantization error moves: from outlier channels of the activation into the weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from effigy.core import kernels
from effigy.core.hadamard import balance_input, rotate as hadamard_rotate
from effigy.core.packing import pack, packed_nbytes, unpack
from effigy.core.quant import QuantizationError, QuantSpec, compute_qparams, dequantize, quantize

BACKENDS = ("reference", "int", "fbgemm")


class QuantLinear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        weight_spec: QuantSpec,
        act_spec: QuantSpec | None,
        bias: bool = True,
        backend: str = "reference",
        balanced: bool = False,
        rotated: bool = False,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_spec, self.act_spec = weight_spec, act_spec
        self.rotated = rotated
        self.register_buffer("input_divisor", torch.ones(in_features) if balanced else None)
        n_scales = self._weight_scale_shape()
        self.register_buffer("weight_packed", torch.zeros(packed_nbytes(in_features * out_features, weight_spec.bits), dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(n_scales))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        if act_spec is not None and not act_spec.dynamic:
            self.register_buffer("act_scale", torch.ones(()))
            self.register_buffer("act_zero_point", torch.zeros(()))
        self._cache: dict[str, object] = {}
        self.backend = backend

    # -- construction -------------------------------------------------------------------------
    def _weight_scale_shape(self) -> tuple[int, ...]:
        spec = self.weight_spec
        if spec.granularity == "tensor":
            return (1, 1)
        if spec.granularity == "channel":
            return (self.out_features, 1)
        if self.in_features % spec.group_size:
            raise QuantizationError(
                f"group_size={spec.group_size} does not divide in_features={self.in_features}; "
                f"choose a divisor of {self.in_features}."
            )
        return (self.out_features, self.in_features // spec.group_size, 1)

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, weight_spec: QuantSpec, act_spec: QuantSpec | None,
        act_qparams: tuple[torch.Tensor, torch.Tensor] | None = None, backend: str = "reference",
        input_divisor: torch.Tensor | None = None, rotated: bool = False,
    ) -> "QuantLinear":
        """Quantize ``linear``'s weights (min-max per the spec) and, for static activations, set the
        calibrated activation scale. ``input_divisor`` / ``rotated`` fold channel balancing into the
        weights: W' = (W * divisor) @ H, applied to the input as x' = (x / divisor) @ H."""
        layer = cls(linear.in_features, linear.out_features, weight_spec, act_spec, linear.bias is not None, backend,
                    balanced=input_divisor is not None, rotated=rotated)
        weight = linear.weight.detach().float()
        if input_divisor is not None:
            layer.input_divisor.copy_(input_divisor)
            weight = weight * input_divisor
        if rotated:
            weight = hadamard_rotate(weight)
        scale, zero_point = compute_qparams(weight, weight_spec)
        q = quantize(weight, weight_spec, scale, zero_point)
        layer.weight_packed.copy_(pack(q, weight_spec.bits, weight_spec.qmin))
        layer.weight_scale.copy_(scale.reshape(layer.weight_scale.shape))
        if linear.bias is not None:
            layer.bias.copy_(linear.bias.detach().float())
        if act_spec is not None and not act_spec.dynamic:
            if act_qparams is None:
                raise QuantizationError("static activation quantization needs calibrated scales: pass a calib_loop.")
            layer.act_scale.copy_(act_qparams[0].reshape(()))
            layer.act_zero_point.copy_(act_qparams[1].reshape(()))
        return layer

    # -- weights ------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise QuantizationError(f"backend={value!r} is unknown: choose one of {', '.join(BACKENDS)}.")
        if value != "reference":
            self._check_integer_path(value)
        self._backend = value
        self._cache.clear()  # each path keeps its own derived weights

    def _check_integer_path(self, backend: str) -> None:
        act = self.act_spec
        if act is None or not act.symmetric or act.granularity not in ("tensor", "token"):
            raise QuantizationError(
                f"backend={backend!r} needs symmetric per-tensor or per-token activation quantization; "
                "use backend='reference' for this configuration."
            )
        if self.weight_spec.granularity == "group":
            raise QuantizationError(f"backend={backend!r} needs per-channel or per-tensor weight scales, not groups.")
        if backend == "fbgemm":
            kernels.check_fbgemm_activation_bits(act.bits)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def weight_int(self) -> torch.Tensor:
        """The integer weight grid [out, in] (unpacked once and cached; the packed bytes stay the storage)."""
        if "wq" not in self._cache:
            shape = (self.out_features, self.in_features)
            self._cache["wq"] = unpack(self.weight_packed, self.weight_spec.bits, self.weight_spec.qmin, shape).to(torch.int8)
        return self._cache["wq"]

    def dequantized_weight(self) -> torch.Tensor:
        if "w" not in self._cache:
            zero = torch.zeros_like(self.weight_scale)
            self._cache["w"] = dequantize(self.weight_int(), self.weight_spec, self.weight_scale, zero)
        return self._cache["w"]

    def weight_nbytes(self) -> int:
        """Bytes held for this layer's weights: packed integers, scales, bias and balancing divisors."""
        extras = [t for t in (self.weight_scale, self.bias, self.input_divisor) if t is not None]
        return self.weight_packed.numel() + sum(t.numel() * t.element_size() for t in extras)

    # -- forward ------------------------------------------------------------------------------
    def _act_qparams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.act_spec.dynamic:
            return compute_qparams(x, self.act_spec)
        return self.act_scale, self.act_zero_point

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = balance_input(x.reshape(-1, self.in_features).float(), self.input_divisor, self.rotated)
        if self.act_spec is None:
            y = F.linear(x, self.dequantized_weight(), self.bias)
        elif self.backend == "reference":
            scale, zero_point = self._act_qparams(x)
            x_dq = dequantize(quantize(x, self.act_spec, scale, zero_point), self.act_spec, scale, zero_point)
            y = F.linear(x_dq, self.dequantized_weight(), self.bias)
        else:
            y = self._integer_forward(x)
        return y.reshape(*shape[:-1], self.out_features)

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, _ = self._act_qparams(x)
        scale = scale.expand(x.shape[0], 1) if scale.dim() < 2 else scale
        w_scale = self.weight_scale.reshape(1, -1).expand(1, self.out_features)
        if self.backend == "int":
            acc = kernels.int_matmul(quantize(x, self.act_spec, scale, torch.zeros_like(scale)), self.weight_int())
            y = acc.float() * scale * w_scale
        else:
            if "fbgemm" not in self._cache:
                self._cache["fbgemm"] = kernels.fbgemm_prepack(self.weight_int(), w_scale.flatten())
                self._cache.pop("wq")  # the prepacked copy is the one this path reads
            x_grid = (x / scale).clamp(self.act_spec.qmin, self.act_spec.qmax)
            y = kernels.fbgemm_linear(x_grid, self._cache["fbgemm"], self.act_spec.bits) * scale
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        act = "none" if self.act_spec is None else f"{self.act_spec.bits}b {self.act_spec.granularity}"
        balance = ("balanced " if self.input_divisor is not None else "") + ("rotated " if self.rotated else "")
        return (f"in={self.in_features}, out={self.out_features}, w={self.weight_spec.bits}b "
                f"{self.weight_spec.granularity}, a={act}, {balance}backend={self.backend}")

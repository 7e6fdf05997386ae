"""``QuantLinear``: a linear layer whose weights are stored packed at 2..8 bits.

Activations are quantized per token at run time (dynamic) or with a calibrated scale (static).
The matmul runs on one of these paths (see :mod:`effigy.core.kernels`):
  reference - dequantize both operands and use a float matmul (the definition; any bit-width)
  int       - exact int32 accumulation of int8 operands (``torch._int_mm``)
  fbgemm    - PyTorch's fbgemm int8 GEMM, the fast CPU path
  int4      - PyTorch's int4 CPU kernel, weight-only (bf16 activations; 8-bit activations on it are
              fake-quantized, a simulation, and named so in the bench)
  auto      - the fastest exact path for this machine and layer shape, timed once and cached

Between calls a layer holds only its packed form: the bit-packed grid (reference, int), fbgemm's
prepacked int8 matrix (fbgemm) or the int4 kernel's layout (int4), plus scales, bias and divisors.
Unpacking and dequantizing happen inside ``forward`` and are freed with it. Whatever the backend, the
state dict carries the bit-packed grid, so checkpoints do not depend on the path that wrote them.

Before quantization the input may be channel-balanced (ViDiT-Q / SmoothQuant): divided per input
channel by ``input_divisor`` and, optionally, rotated by an orthonormal Hadamard matrix. The same
transforms are folded into the stored weights, so the float product is unchanged and only the
quantization error moves: from outlier channels of the activation into the weights.
"""
from __future__ import annotations

import torch
from torch import nn

from effigy.core.hadamard import balance_input
from effigy.core.hadamard import rotate as hadamard_rotate
from effigy.core.packing import pack, packed_nbytes, unpack
from effigy.core.quant import (
    QuantizationError,
    QuantSpec,
    compute_qparams,
    quantize,
    symmetric_token_scale,
)
from effigy.nn.backend_choice import choose_backend
from effigy.nn.backends import BACKENDS, KERNEL_BACKENDS


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
        self.register_buffer("weight_packed", torch.zeros(packed_nbytes(in_features * out_features, weight_spec.bits),
                                                          dtype=torch.uint8))
        self.register_buffer("weight_scale", torch.ones(self._weight_scale_shape()))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        if act_spec is not None and not act_spec.dynamic:
            self.register_buffer("act_scale", torch.ones(()))
            self.register_buffer("act_zero_point", torch.zeros(()))
        self._kernel_weight: object = None  # fbgemm prepack, or (int4 packed, scales_and_zeros)
        self._backend = "reference"
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
        layer = cls(linear.in_features, linear.out_features, weight_spec, act_spec, linear.bias is not None,
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
        layer.backend = backend  # converts the packed grid to the backend's own held form
        return layer

    # -- backends and held forms --------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if self.weight_scale.is_meta:  # a shape-only skeleton (checkpoint checks): keep the stored layout
            if value != "auto":
                self.check_backend(value)
            return
        if value == "auto":
            value = choose_backend(self)
        self.check_backend(value)
        grid = self.weight_grid()
        self._backend = value
        self._hold(grid)

    @property
    def kernel_weight(self) -> object:
        """The kernel's held weights (fbgemm prepack, or (int4 packed, scales_and_zeros)); None otherwise."""
        return self._kernel_weight

    def check_backend(self, backend: str) -> None:
        """Raise a :class:`QuantizationError` naming the remedy if ``backend`` cannot run this layer."""
        if backend not in BACKENDS:
            raise QuantizationError(f"backend={backend!r} is unknown: choose one of {', '.join(BACKENDS)}.")
        KERNEL_BACKENDS.get(backend).check(self)

    def int4_group_size(self) -> int:
        return self.weight_spec.group_size if self.weight_spec.granularity == "group" else self.in_features

    def weight_grid(self) -> torch.Tensor:
        """The integer weight grid [out, in] as int8, unpacked from the held form (transient)."""
        return KERNEL_BACKENDS.get(self._backend).grid(self)

    def _hold(self, grid: torch.Tensor) -> None:
        """Keep the weights in the current backend's form only (no second copy)."""
        self._kernel_weight = None
        self._kernel_weight = KERNEL_BACKENDS.get(self._backend).hold(self, grid)

    def _holds_kernel_form(self) -> bool:
        return KERNEL_BACKENDS.get(self._backend).kernel_form

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._holds_kernel_form():
            destination[prefix + "weight_packed"] = pack(self.weight_grid(), self.weight_spec.bits,
                                                         self.weight_spec.qmin)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        kernel_form = self._holds_kernel_form()
        packed = state_dict.pop(prefix + "weight_packed", None) if kernel_form else None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if kernel_form:
            if packed is None:
                missing_keys.append(prefix + "weight_packed")
                return
            shape = (self.out_features, self.in_features)
            self._hold(unpack(packed, self.weight_spec.bits, self.weight_spec.qmin, shape).to(torch.int8))

    def weight_nbytes(self) -> int:
        """Bytes held for this layer's weights: the backend's packed form, scales, bias and divisors."""
        extras = [t for t in (self.weight_scale, self.bias, self.input_divisor) if t is not None]
        return KERNEL_BACKENDS.get(self._backend).held_nbytes(self) + sum(t.numel() * t.element_size() for t in extras)

    # -- forward ------------------------------------------------------------------------------
    def act_qparams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Activation (scale, zero point): per call for dynamic specs, the calibrated ones for static."""
        if self.act_spec.dynamic:
            return compute_qparams(x, self.act_spec)
        return self.act_scale, self.act_zero_point

    def integer_act_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Symmetric activation scales, one per row of ``x``, for the integer paths."""
        if self.act_spec.dynamic and self.act_spec.granularity == "token":
            return symmetric_token_scale(x, self.act_spec.qmax)
        return self.act_qparams(x)[0].expand(x.shape[0], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x = x.reshape(-1, self.in_features)
        if self.act_spec is not None or self.input_divisor is not None or self.rotated:
            x = balance_input(x.float(), self.input_divisor, self.rotated)  # activation grids are computed in fp32
        # a weight-only layer keeps the activations' dtype (W4A16 in a bf16 model: a bf16 GEMM); the output
        # always has the input's dtype
        y = KERNEL_BACKENDS.get(self._backend).forward(self, x)
        return y.reshape(*shape[:-1], self.out_features).to(dtype)

    def extra_repr(self) -> str:
        act = "none" if self.act_spec is None else f"{self.act_spec.bits}b {self.act_spec.granularity}"
        balance = ("balanced " if self.input_divisor is not None else "") + ("rotated " if self.rotated else "")
        return (f"in={self.in_features}, out={self.out_features}, w={self.weight_spec.bits}b "
                f"{self.weight_spec.granularity}, a={act}, {balance}backend={self.backend}")

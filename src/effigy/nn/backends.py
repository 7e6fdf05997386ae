"""The matmul paths a :class:`~effigy.nn.QuantLinear` can run on, one registered class each.

A backend says whether it can run a layer (``check``, with the remedy in the error), what the layer holds
between calls (``hold``: the bit-packed grid, or the kernel's own prepacked form), how to get the integer
grid back (``grid``), how many bytes it holds, and the forward. Adding a kernel is registering one class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from effigy.core import kernels
from effigy.core.packing import pack, unpack
from effigy.core.quant import QuantizationError, dequantize, fake_quantize, quantize
from effigy.registry import Registry


class KernelBackend:
    """The bit-packed grid path (the reference definition): any bit-width, dequantize and float matmul."""

    name = "reference"
    kernel_form = False  # True: the kernel's held weights replace the bit-packed buffer

    def check(self, layer) -> None:
        """Raise a :class:`QuantizationError` naming the remedy if this backend cannot run ``layer``."""

    def hold(self, layer, grid: torch.Tensor) -> object | None:
        """Store ``grid`` in this backend's held form; returns the kernel's weight object (None: packed buffer)."""
        layer._buffers["weight_packed"] = pack(grid, layer.weight_spec.bits, layer.weight_spec.qmin)
        return None

    def grid(self, layer) -> torch.Tensor:
        """The integer weight grid [out, in] as int8, unpacked from the held form (transient)."""
        shape = (layer.out_features, layer.in_features)
        return unpack(layer.weight_packed, layer.weight_spec.bits, layer.weight_spec.qmin, shape).to(torch.int8)

    def held_nbytes(self, layer) -> int:
        return layer.weight_packed.numel()

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        weight = dequantize(layer.weight_grid(), layer.weight_spec, layer.weight_scale,
                            torch.zeros_like(layer.weight_scale))
        if layer.act_spec is not None:
            scale, zero_point = layer.act_qparams(x)
            x = dequantize(quantize(x, layer.act_spec, scale, zero_point), layer.act_spec, scale, zero_point)
        # the GEMM runs in the activations' dtype: a bf16 model's weight-only layers unpack to bf16 (compiled, the
        # unpacking fuses into one kernel and the GEMM is bf16's)
        return F.linear(x, weight.to(x.dtype), layer.bias)


class IntBackend(KernelBackend):
    """Exact int32 accumulation of int8 operands (``torch._int_mm``)."""

    name = "int"

    def check(self, layer) -> None:
        act = layer.act_spec
        if act is None or not act.symmetric or act.granularity not in ("tensor", "token"):
            raise QuantizationError(f"backend={self.name!r} needs symmetric per-tensor or per-token activation "
                                    "quantization; use backend='reference' for this configuration.")
        if layer.weight_spec.granularity == "group":
            raise QuantizationError(f"backend={self.name!r} needs per-channel or per-tensor weight scales, not groups.")

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        scale = layer.integer_act_scale(x)
        acc = self.int_product(layer, quantize(x, layer.act_spec, scale, torch.zeros_like(scale)))
        y = acc.float() * scale * layer.weight_scale.reshape(1, -1)
        return y if layer.bias is None else y + layer.bias

    def int_product(self, layer, xq: torch.Tensor) -> torch.Tensor:
        """The exact int32 product of the int8 activations and the weight grid."""
        return kernels.int_matmul(xq, layer.weight_grid())


class FbgemmBackend(IntBackend):
    """PyTorch's fbgemm int8 GEMM, the fast CPU path; holds fbgemm's prepacked int8 matrix."""

    name = "fbgemm"
    kernel_form = True

    def check(self, layer) -> None:
        super().check(layer)
        kernels.check_fbgemm_activation_bits(layer.act_spec.bits)

    def hold(self, layer, grid: torch.Tensor) -> object:
        layer._buffers["weight_packed"] = None
        return kernels.fbgemm_prepack(grid, layer.weight_scale.flatten())

    def grid(self, layer) -> torch.Tensor:
        return kernels.fbgemm_unpack(layer.kernel_weight)

    def held_nbytes(self, layer) -> int:  # int8 matrix + float64 scales and int64 zero points per channel
        return layer.out_features * (layer.in_features + 16)

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        scale = layer.integer_act_scale(x)
        # rounded on the grid here: the kernel would round after its zero-point shift, in fp32. Per-token
        # scales put every row within the grid already; static scales clip.
        x_grid = (x / scale).round_()
        if not layer.act_spec.dynamic:
            x_grid.clamp_(layer.act_spec.qmin, layer.act_spec.qmax)
        y = kernels.fbgemm_linear(x_grid, layer.kernel_weight, layer.act_spec.bits)
        return y.mul_(scale) if layer.bias is None else torch.addcmul(layer.bias, y, scale)


class GraphInt8Backend(IntBackend):
    """8-bit weights held as one int8 matrix in the GEMM's own layout [in, out], and a forward written as the
    graph ``torch.compile`` turns into fast integer kernels: symmetric per-token int8 activations (their
    quantization fuses into the elementwise kernel before the GEMM), ``torch._int_mm``, then the per-token
    and per-channel scales and the bias (fused after it). With inductor's freezing the same graph is lowered
    to oneDNN's ``qlinear_pointwise`` (:func:`effigy.compile` asks for it only when told: docs/kernels.md).
    The held bytes equal the 8-bit packed grid's; eager, it runs ``torch._int_mm`` directly."""

    name = "graph-int8"
    kernel_form = True

    def check(self, layer) -> None:
        super().check(layer)
        if layer.weight_spec.bits != 8:
            raise QuantizationError(f"backend={self.name!r} holds 8-bit weights as int8; {layer.weight_spec.bits}-bit "
                                    "weights would double their bytes: use backend='int' (unpacked inside the "
                                    "graph, held packed) or 'int4'.")

    def hold(self, layer, grid: torch.Tensor) -> torch.Tensor:
        layer._buffers["weight_packed"] = None
        return grid.to(torch.int8).t().contiguous()

    def grid(self, layer) -> torch.Tensor:
        return layer.kernel_weight.t()

    def held_nbytes(self, layer) -> int:
        return layer.kernel_weight.numel()

    def int_product(self, layer, xq: torch.Tensor) -> torch.Tensor:
        return kernels.int_matmul_kn(xq, layer.kernel_weight)


class Int4Backend(KernelBackend):
    """PyTorch's int4 CPU kernel, weight-only (bf16 activations; quantized activations are simulated)."""

    name = "int4"
    kernel_form = True

    def check(self, layer) -> None:
        if layer.weight_spec.bits > 4 or layer.weight_spec.granularity == "tensor":
            raise QuantizationError("backend='int4' needs weights of at most 4 bits with channel or group scales.")
        if layer.act_spec is not None and not layer.act_spec.dynamic:
            raise QuantizationError("backend='int4' takes dynamic (or no) activation quantization.")
        kernels.check_int4_shape(layer.out_features, layer.in_features, layer.int4_group_size())

    def hold(self, layer, grid: torch.Tensor) -> object:
        layer._buffers["weight_packed"] = None
        return kernels.int4_prepack(grid, layer.weight_scale)

    def grid(self, layer) -> torch.Tensor:
        return kernels.int4_unpack(layer.kernel_weight[0], layer.in_features, layer.out_features,
                                   layer.int4_group_size())

    def held_nbytes(self, layer) -> int:
        return sum(t.numel() * t.element_size() for t in layer.kernel_weight)

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        if layer.act_spec is not None:  # simulated: the kernel takes bf16 activations
            x = fake_quantize(x, layer.act_spec)
        packed, scales_and_zeros = layer.kernel_weight
        y = kernels.int4_linear(x, packed, layer.int4_group_size(), scales_and_zeros)
        return y if layer.bias is None else y.add_(layer.bias)


KERNEL_BACKENDS: Registry[KernelBackend] = Registry("backend", QuantizationError)
for _backend in (KernelBackend(), IntBackend(), FbgemmBackend(), GraphInt8Backend(), Int4Backend()):
    KERNEL_BACKENDS.register(_backend.name, _backend)
BACKENDS = (*KERNEL_BACKENDS.names(), "auto")  # "auto": the fastest exact one, timed (see backend_choice)

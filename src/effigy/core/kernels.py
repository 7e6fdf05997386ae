"""Integer matrix multiplication paths, and which one this machine can run exactly.

Every path computes ``Y = (s_x * Xq) @ (s_w * Wq)^T`` from int8 operands with int32 accumulation:
  int_mm    - ``torch._int_mm``: exact; fast on CUDA and on CPUs with VNNI (eager, and fused under
              ``torch.compile``: :func:`effigy.compile`), a slow reference kernel on CPUs without it.
  fbgemm    - PyTorch's fbgemm int8 GEMM on x86 CPUs: the fast CPU path. It multiplies unsigned
              8-bit activations by signed 8-bit weights; on CPUs without VNNI instructions pairs of
              products are summed in int16 with saturation, so activations must stay within 7 bits
              there (the ``reduce_range`` convention of PyTorch's x86 quantization).
  int4      - PyTorch's int4 CPU kernel (``_weight_int4pack_mm_for_cpu``): weight-only, 4-bit weights stay
              4-bit in memory (N*K/2 bytes), bf16 activations, one scale per group of 32..256 input channels.
  reference - dequantize and use a float matmul: the readable definition the others are tested against.
"""
from __future__ import annotations

import functools
import warnings

import torch

from effigy.core.quant import QuantizationError

FBGEMM_ZERO_POINT_7BIT = 64
FBGEMM_ZERO_POINT_8BIT = 128


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> str:
    """/proc/cpuinfo's text (empty where there is none), read once a process."""
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def cpu_has_vnni() -> bool:
    """True where the CPU has AVX512-VNNI or AVX-VNNI (int8 dot products without int16 saturation)."""
    flags = _cpuinfo()
    return "avx512_vnni" in flags or "avx_vnni" in flags


def fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines


def fbgemm_max_activation_bits() -> int:
    """Widest symmetric activation grid the fbgemm path computes exactly on this CPU."""
    return 8 if cpu_has_vnni() else 7


def check_fbgemm_activation_bits(act_bits: int) -> None:
    """Refuse activation widths that the fbgemm path would compute wrongly on this CPU."""
    limit = fbgemm_max_activation_bits()
    if act_bits > limit:
        raise QuantizationError(
            f"the fbgemm int8 path computes {act_bits}-bit activations exactly only on CPUs with VNNI; "
            f"this CPU allows at most {limit} bits (int16 pair saturation). Use backend='int' (exact, slow on "
            "CPU), backend='reference', or 7-bit activations (effigy.recipes.fast_cpu_variant)."
        )


def int_matmul(xq: torch.Tensor, wq: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``xq @ wq.T`` for int8 ``xq`` [M, K] and ``wq`` [N, K].

    Uses ``torch._int_mm`` where K and N are multiples of 8 (16 rows or fewer padded with zero rows), else
    an int32 matmul, which is exact too.
    """
    return int_matmul_kn(xq.to(torch.int8), wq.to(torch.int8).t())


def int_matmul_kn(xq: torch.Tensor, w_kn: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``xq @ w_kn`` for int8 ``xq`` [M, K] and int8 ``w_kn`` [K, N] (the weights already in the
    layout the GEMM reads, so the graph holds no transpose): ``torch._int_mm`` where its shape rules hold,
    else an int32 matmul. Written as the graph ``torch.compile`` fuses (activation quantization into the
    kernel before it, scales and bias into the one after) and, with inductor's freezing, lowers to oneDNN."""
    rows = xq.shape[0]
    if xq.shape[1] % 8 or w_kn.shape[1] % 8:
        return xq.to(torch.int32) @ w_kn.to(torch.int32)
    if rows <= 16:  # _int_mm wants more than 16 rows; zero rows cost less than an int32 matmul (no fast kernel)
        return torch._int_mm(torch.nn.functional.pad(xq, (0, 0, 0, 17 - rows)), w_kn)[:rows]
    return torch._int_mm(xq, w_kn)


def cpu_has_amx() -> bool:
    """True where the CPU has AMX tiles (inductor's int8 GEMM templates and oneDNN's int8 path run on them)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def cpu_isa_class() -> str:
    """What decides which integer or bf16 path wins here: "AMX", "AVX512-VNNI", "AVX2-VNNI" or "AVX2 only"."""
    if cpu_has_amx():
        return "AMX"
    flags = _cpuinfo()
    if "avx512_vnni" in flags:
        return "AVX512-VNNI" + ("+BF16" if "avx512_bf16" in flags else "")
    return "AVX2-VNNI" if "avx_vnni" in flags else "AVX2 only"


def fbgemm_prepack(wq: torch.Tensor, w_scale: torch.Tensor) -> object:
    """Prepack int8 weights [N, K] with per-output-channel scales for :func:`fbgemm_linear`."""
    if not fbgemm_available():
        raise QuantizationError("this PyTorch build has no fbgemm engine; use backend='int' or 'reference'.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor constructors are deprecated but still the fbgemm API
        qweight = torch._make_per_channel_quantized_tensor(
            wq.to(torch.int8).contiguous(),
            w_scale.double().flatten(),
            torch.zeros(wq.shape[0], dtype=torch.long),
            0,
        )
        return torch.ops.quantized.linear_prepack(qweight, None)


def fbgemm_unpack(packed: object) -> torch.Tensor:
    """The int8 weight grid [N, K] that :func:`fbgemm_prepack` packed (for saving; not on the hot path)."""
    qweight, _ = torch.ops.quantized.linear_unpack(packed)
    return qweight.int_repr()


INT4_GROUP_SIZES = (32, 64, 128, 256)
INT4_OFFSET = 8  # the kernel stores unsigned nibbles u and computes (u - 8) * scale + zero


def check_int4_shape(out_features: int, in_features: int, group_size: int) -> None:
    """Refuse shapes the int4 CPU kernel cannot run, before any weights are converted."""
    if group_size not in INT4_GROUP_SIZES or in_features % group_size or out_features % 16:
        raise QuantizationError(
            f"the int4 kernel needs a group size among {INT4_GROUP_SIZES} dividing in_features and out_features "
            f"divisible by 16; got group {group_size}, in {in_features}, out {out_features}. Use backend='reference'."
        )


def int4_prepack(wq: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack a symmetric 4-bit grid ``wq`` [N, K] (values in -8..7) with group scales [N, G] into the
    kernel's layout: (packed uint8 [N, K/2], scales_and_zeros bf16 [G, N, 2])."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu((wq.to(torch.int32) + INT4_OFFSET).contiguous(), 1)
    scales = scale.reshape(wq.shape[0], -1).t().to(torch.bfloat16)
    return packed, torch.stack([scales, torch.zeros_like(scales)], -1).contiguous()


def int4_linear(x: torch.Tensor, packed: torch.Tensor, group_size: int, scales_and_zeros: torch.Tensor) -> torch.Tensor:
    """``x @ W^T`` with W read from the int4 layout; bf16 inputs, fp32 result."""
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), packed, group_size,
                                                       scales_and_zeros).float()


def int4_unpack(packed: torch.Tensor, in_features: int, out_features: int, group_size: int) -> torch.Tensor:
    """The signed grid [N, K] back from the int4 layout (for saving): the kernel applied to the identity
    with unit scales returns u - 8 exactly, as these are small integers in bf16."""
    groups = in_features // group_size
    unit = torch.stack([torch.ones(groups, out_features), torch.zeros(groups, out_features)], -1).to(torch.bfloat16)
    eye = torch.eye(in_features, dtype=torch.bfloat16)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, packed, group_size, unit).t().round().to(torch.int8)


def fbgemm_linear(x_scaled: torch.Tensor, packed: object, act_bits: int) -> torch.Tensor:
    """Int8 GEMM of ``x_scaled`` (activations already divided by their scale, so they lie on the integer
    grid of ``act_bits``) with prepacked weights; returns ``(round(x_scaled) @ Wq^T) * s_w`` in fp32."""
    check_fbgemm_activation_bits(act_bits)
    zero_point = FBGEMM_ZERO_POINT_8BIT if act_bits == 8 else FBGEMM_ZERO_POINT_7BIT
    return torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
        x_scaled.contiguous(), 1.0, zero_point, packed
    )

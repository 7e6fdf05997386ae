"""Third-party import noise kept out of effigy's output: one place that every command and every fresh
measuring process calls first."""
import logging
import os
import sys
import warnings

# Import-time messages of optional libraries that say nothing about the run: torchao's CUDA-only
# extension files, diffusers' torchao checkpoint types, torch's pytree deprecation notes.
NOISY_WARNINGS = ("torch.ao.quantization is deprecated", "torch.quantize_per_tensor, torch.quantize_per_channel")
NOISY_IMPORT_LOGGERS = ("torchao", "diffusers.quantizers.torchao.torchao_quantizer", "torch.utils._pytree")


def quiet_third_party_imports() -> None:
    """Keep third-party import noise out of every command's output and every fresh measuring process
    (they import this package first); real errors still show."""
    for name in NOISY_IMPORT_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # torch's notes on its own eager quantization API, which the quantize_dynamic peer rows use on purpose
    for message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # transformers' and diffusers' "Loading weights" bars on every local load (read when they are imported);
    # effigy reports its own progress
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # ... and where they were imported already, through their own switches
    for module, switch in (("huggingface_hub.utils", "disable_progress_bars"),
                           ("transformers.utils.logging", "disable_progress_bar"),
                           ("diffusers.utils.logging", "disable_progress_bar")):
        if module in sys.modules:
            getattr(sys.modules[module], switch)()


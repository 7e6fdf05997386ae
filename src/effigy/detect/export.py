"""The detectors as ONNX files, for hosting them in Triton, OpenVINO or ONNX Runtime without effigy.

Each file maps face crops [N, 3, 64, 64] (RGB in [0, 1], framed like the LFW crops: :mod:`effigy.detect.faces`
finds and cuts them) to one score per crop: P(fake) for a deepfake detector, P(live) for the anti-spoofing
model (its prototypes and scale are inside the graph). The batch dimension is dynamic. Each export is checked
against the PyTorch model on sample crops with ONNX Runtime before it is kept, and a JSON sidecar says what
the file expects and returns, which weights it came from (their sha256) and the threshold to call with.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effigy.detect.fas.model import live_probability
from effigy.errors import EffigyError
from effigy.worlds.faces import SIZE

log = logging.getLogger(__name__)
ONNX_HINT = "the ONNX export needs onnx, onnxscript and onnxruntime: pip install 'effigy[onnx]'."
TOLERANCE = 1e-4


class LiveScore(nn.Module):
    """The anti-spoofing model as one graph: crops in, P(live) out (prototypes and scale as constants)."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale
        self.register_buffer("prototypes", model.prototypes().detach().clone())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return live_probability(self.model.features(images), self.prototypes, self.scale)


def export_onnx(module: nn.Module, path: Path, samples: np.ndarray, record: dict) -> dict:
    """Write ``module`` (crops [N, 3, SIZE, SIZE] -> scores [N]) to ``path`` as ONNX with a dynamic batch, check it
    with ONNX Runtime on ``samples`` against PyTorch, and write ``path`` + ``.json``.

    Args:
        module: the scoring module, in eval mode.
        path: the .onnx file to write.
        samples: [M, 3, SIZE, SIZE] crops to check on (the issue asks for 32).
        record: what the sidecar says besides the check (model, sha256, score, threshold).
    Returns:
        The sidecar's record, with the largest absolute difference found.
    Raises:
        EffigyError: the export tools are missing, or the exported scores differ beyond ``TOLERANCE``.
    """
    try:
        import onnxruntime
    except ImportError:
        raise EffigyError(ONNX_HINT) from None
    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.from_numpy(np.ascontiguousarray(samples[:2], dtype=np.float32))
    batch = torch.export.Dim("batch", min=1, max=4096)
    chatter = io.StringIO()  # the exporter prints its steps to stdout, which is the CLI's --json channel
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, not the user's
            torch.onnx.export(module, (example,), str(path), input_names=["images"], output_names=["scores"],
                              dynamic_shapes={"images": {0: batch}}, dynamo=True, external_data=False,
                              verbose=False)
    except ImportError:
        raise EffigyError(ONNX_HINT) from None
    log.debug("torch.onnx.export: %s", chatter.getvalue())
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = np.ascontiguousarray(samples, dtype=np.float32)
    exported = session.run(["scores"], {"images": inputs})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(inputs)).numpy()
    difference = float(np.abs(exported - expected).max())
    if difference > TOLERANCE:
        path.unlink()
        raise EffigyError(f"the exported model's scores differ from PyTorch's by {difference:.2e} (over "
                          f"{TOLERANCE:g}); nothing was written.")
    record = {**record, "input": f"images: float32 [N, 3, {SIZE}, {SIZE}], RGB in [0, 1], face crops framed like "
              "the LFW crops (effigy.detect.faces.find_faces)", "output": "scores: float32 [N]",
              "checked_on": len(samples), "max_abs_difference": difference, "tolerance": TOLERANCE,
              "opset": _opset(path)}
    Path(f"{path}.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("exported %s (largest difference %.2e on %d crops)", path, difference, len(samples))
    return record


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def sample_crops(count: int = 32, seed: int = 0) -> np.ndarray:
    """[count] crops of the face world's test identities, real and forged, across the capture domains: the
    export's check inputs."""
    from effigy.worlds.deepfakes import render_forgery
    from effigy.worlds.faces import DOMAINS, real_faces, split_identities

    identities = [int(i) for i in split_identities("test")]
    families, domains = ("real", "sbi", "swap"), list(DOMAINS)
    crops = []
    for i in range(count):
        identity = identities[i % len(identities)]
        image, _ = render_forgery(identity, real_faces()[identity], families[i % 3], domains[i % len(domains)], seed,
                                  i, identities)
        crops.append(image)
    return np.stack(crops).astype(np.float32)

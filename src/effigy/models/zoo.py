"""The model zoo: shipped weights (safetensors + sha256 manifest) and the commands that trained them.

Weights live in ``effigy/models/weights``; ``MANIFEST.json`` records for each model its file, sha256,
dtype and training config, so ``effigy zoo train NAME`` reproduces it and loading verifies it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.checkpoint.files import replaced_atomically, sha256_of
from effigy.errors import CheckpointError
from effigy.models.generators import dit_digits, dit_faces, t2i_shapes, t2i_shapes_lcm
from effigy.models.judges import clip_standin, digit_classifier, shapes_checker
from effigy.models.lidar import centerpoint as lidar_centerpoint
from effigy.models.lidar import train as lidar_train
from effigy.models.var import tokenizer as var_tokenizer
from effigy.models.var import transformer as var_transformer
from effigy.registry import Registry
from effigy.serialize import read_json_file

WEIGHTS_DIR = Path(__file__).parent / "weights"
MANIFEST = WEIGHTS_DIR / "MANIFEST.json"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    config_cls: type
    build: Callable[[object], nn.Module]
    train: Callable[..., nn.Module]
    dtype: torch.dtype
    resumable: bool = False  # train takes checkpoint_dir and resumes from it


def config_variant(base: type, name: str, **defaults) -> type:
    """A dataclass config like ``base`` whose listed fields default to ``defaults``: the config of a zoo entry
    that is the base model trained another way (a left-out domain, another loss), so that its own
    ``effigy zoo train NAME`` reproduces it."""
    import copy
    import dataclasses

    types = {f.name: f.type for f in dataclasses.fields(base)}
    overridden = [(key, types[key], dataclasses.field(default_factory=lambda v=value: copy.deepcopy(v)))
                  for key, value in defaults.items()]
    return dataclasses.make_dataclass(name, overridden, bases=(base,))


_ENTRIES = (
    ZooEntry(
        "dit-digits",
        "class-conditional DiT (diffusers DiTTransformer2DModel) on 16x16 scikit-learn digits, DPM-Solver + CFG",
        dit_digits.DiTDigitsConfig,
        dit_digits.build_transformer,
        dit_digits.train,
        torch.float16,
    ),
    ZooEntry(
        "dit-faces",
        "one-class DiT (diffusers DiTTransformer2DModel) on the 60 train-split LFW face crops (grey, 24x24): the "
        "deepfake world's synthetic faces",
        dit_faces.DiTFacesConfig,
        dit_faces.build_transformer,
        dit_faces.train,
        torch.float16,
    ),
    ZooEntry(
        "digits-classifier",
        "CNN on the real digits: sample class accuracy, and 128-d features for FID",
        digit_classifier.ClassifierConfig,
        digit_classifier.DigitClassifier,
        digit_classifier.train,
        torch.float32,
    ),
    ZooEntry(
        "t2i-shapes",
        "text-to-image PixArt-style transformer (diffusers PixArtTransformer2DModel) on the 32x32 shapes world, "
        "cross-attending to all-MiniLM-L6-v2 token embeddings",
        t2i_shapes.T2IShapesConfig,
        t2i_shapes.build_transformer,
        t2i_shapes.train,
        torch.float16,
    ),
    ZooEntry(
        "t2i-shapes-lcm",
        "few-step (1-4) student of t2i-shapes by latent-consistency distillation, guidance baked in; "
        "diffusers LCMScheduler",
        t2i_shapes_lcm.T2IShapesLCMConfig,
        t2i_shapes_lcm.build_transformer,
        t2i_shapes_lcm.train,
        torch.float16,
        resumable=True,
    ),
    ZooEntry(
        "var-digits-vqvae",
        "multi-scale residual VQ tokenizer (VAR) of the 16x16 digits: 8x8 latent, scales 1-8 (130 tokens), "
        "one 256-code EMA codebook",
        var_tokenizer.VQVAEConfig,
        var_tokenizer.build_tokenizer,
        var_tokenizer.train,
        torch.float32,
        resumable=True,
    ),
    ZooEntry(
        "var-digits",
        "class-conditional next-scale prediction transformer (VAR) over var-digits-vqvae tokens, AdaLN, "
        "block-causal attention with a KV cache, scale-dependent CFG",
        var_transformer.VARConfig,
        var_transformer.build_transformer,
        var_transformer.train,
        torch.float16,
        resumable=True,
    ),
    ZooEntry(
        "lidar-centerpoint",
        "CenterPoint-style 3D detector (cars, pedestrians, cyclists) on the simulated 32-beam lidar world: sparse "
        "3D backbone in plain PyTorch, BEV 2D backbone, centre heatmaps",
        lidar_centerpoint.CenterPointConfig,
        lidar_centerpoint.build_detector,
        lidar_train.train,
        torch.float32,
        resumable=True,
    ),
    ZooEntry(
        "lidar-centerpoint-spbn",
        "lidar-centerpoint trained with sparsity-preserving norms in its 2D backbone and head from the first step "
        "(no mean, no bias: an empty BEV cell stays zero), the base of Ada3D's second design",
        config_variant(lidar_centerpoint.CenterPointConfig, "CenterPointSPBNConfig", norm_2d="sparsity-preserving"),
        lidar_centerpoint.build_detector,
        lidar_train.train,
        torch.float32,
        resumable=True,
    ),
    ZooEntry(
        "shapes-checker",
        "attribute checker: grid detector reading colour, shape, size and position of shapes-world objects",
        shapes_checker.CheckerConfig,
        shapes_checker.ShapesChecker,
        shapes_checker.train,
        torch.float32,
    ),
    ZooEntry(
        "shapes-clip",
        "CLIP-score stand-in: EfficientNet-Lite0 + MiniLM features aligned by trained projections",
        clip_standin.AlignConfig,
        clip_standin.AlignmentHead,
        clip_standin.train,
        torch.float32,
    ),
)
HERE = "effigy.models.zoo"
FAS, DEEPFAKE, LIDAR = "effigy.detect.fas.zoo:entries", "effigy.detect.deepfake.zoo:entries", "effigy.lidar.zoo:entries"
TASKS = ("generator", "tokenizer", "judge", "face-antispoofing", "deepfake", "explainer", "lidar")
# Every zoo model, in one place: name -> (task, where its entry is defined). Entries defined above this floor (the
# detectors, Ada3D) are imported when first asked for, never as a side effect of importing their package.
DECLARED: dict[str, tuple[str, str]] = {
    "dit-digits": ("generator", HERE), "dit-faces": ("generator", HERE), "t2i-shapes": ("generator", HERE),
    "t2i-shapes-lcm": ("generator", HERE), "var-digits": ("generator", HERE), "var-digits-vqvae": ("tokenizer", HERE),
    "digits-classifier": ("judge", HERE), "shapes-checker": ("judge", HERE), "shapes-clip": ("judge", HERE),
    "lidar-centerpoint": ("lidar", HERE), "lidar-centerpoint-spbn": ("lidar", HERE), "lidar-ada3d": ("lidar", LIDAR),
    "lidar-ada3d-spbn": ("lidar", LIDAR),
    "fas-protonet": ("face-antispoofing", FAS),
    **{f"fas-protonet-without-{target}": ("face-antispoofing", FAS)
       for target in ("phone", "webcam", "laptop", "kiosk", "print", "replay", "mask")},
    "deepfake-authguard": ("deepfake", DEEPFAKE), "deepfake-ce": ("deepfake", DEEPFAKE),
    "deepfake-clip": ("deepfake", DEEPFAKE), "deepfake-explainer": ("explainer", DEEPFAKE),
}


class DeclaredZoo(Registry[ZooEntry]):
    """The zoo's registry: every name of :data:`DECLARED` is known from the start; an entry defined in a module
    above this floor is built by importing that module's ``entries()`` at the first lookup of one of its names
    (so ``load_zoo_model("fas-protonet")`` works in a fresh interpreter, whatever was imported before)."""

    def __init__(self, declared: dict[str, tuple[str, str]], builtin: tuple[ZooEntry, ...]) -> None:
        super().__init__("zoo model", CheckpointError, listing="effigy zoo list")
        self._declared = declared
        for entry in builtin:
            self.register(entry.name, entry)

    def get(self, name: str) -> ZooEntry:
        if name in self._declared and name not in self._entries:
            self._import_provider(self._declared[name][1])
        return super().get(name)

    def _import_provider(self, where: str) -> None:
        import importlib

        module, function = where.split(":")
        for entry in getattr(importlib.import_module(module), function)():
            if entry.name not in self._declared:
                raise CheckpointError(f"{where} defines zoo model {entry.name!r}, which DECLARED does not list.")
            if entry.name not in self._entries:
                self.register(entry.name, entry)

    def task(self, name: str) -> str:
        """What the model is for (one of :data:`TASKS`)."""
        self.get(name)  # an unknown name fails with the zoo's own error
        return self._declared[name][0]

    def names(self, task: str | None = None) -> tuple[str, ...]:
        """Every declared name, or those of one task."""
        return tuple(n for n, (t, _) in self._declared.items() if task is None or t == task)

    def items(self) -> list[tuple[str, ZooEntry]]:
        return [(name, self.get(name)) for name in self._declared]

    def __contains__(self, name: object) -> bool:
        return name in self._declared

    def __iter__(self):
        return iter(self._declared)

    def __len__(self) -> int:
        return len(self._declared)


ZOO = DeclaredZoo(DECLARED, _ENTRIES)


def zoo_entry(name: str) -> ZooEntry:
    return ZOO.get(name)


def read_manifest(path: Path = MANIFEST) -> dict:
    """The weights manifest (file -> sha256 and training record); a damaged one is one clear error."""
    if not path.exists():
        return {}
    data = read_json_file(path, "a zoo MANIFEST.json (reinstall effigy, or re-run `effigy zoo train`)", CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not the manifest's object; reinstall effigy.")
    return data


def shipped_config(name: str) -> object:
    """The training config a shipped model was made with (its manifest record), or its entry's defaults when it
    is not shipped yet: what a model built on top of it needs to know of its architecture."""
    record = read_manifest().get(name)
    config_cls = zoo_entry(name).config_cls
    return config_cls() if record is None else config_cls.from_dict(record["config"])


def load_zoo_model(name: str, weights_dir: str | Path = WEIGHTS_DIR) -> tuple[nn.Module, object]:
    """Build the named model, verify its shipped weights against the manifest's sha256, load them."""
    from effigy.checkpoint.files import read_safetensors

    entry = zoo_entry(name)
    weights_dir = Path(weights_dir)
    manifest_path = weights_dir / "MANIFEST.json"
    record = read_manifest(manifest_path).get(name)
    if record is None:
        raise CheckpointError(f"no shipped weights for {name!r}; train them with `effigy zoo train {name}`.")
    path = _weights_file(manifest_path, name, record)
    actual = sha256_of(path)
    if actual != record["sha256"]:
        raise CheckpointError(
            f"{path} has sha256 {actual[:12]}..., the manifest expects {record['sha256'][:12]}...: the file is "
            f"corrupt or was replaced. Reinstall effigy or run `effigy zoo train {name}`."
        )
    if not isinstance(record.get("config"), dict):
        raise CheckpointError(f"{manifest_path}: {name}'s record has no config object; reinstall effigy or run "
                              f"`effigy zoo train {name}`.")
    config = entry.config_cls.from_dict(record["config"])
    model = entry.build(config)
    state = read_safetensors(path)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{path}: tensor {bad!r} holds NaN or infinite values (the sha256 matches a damaged "
                              f"training run); run `effigy zoo train {name}` again.")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval(), config


def _weights_file(manifest_path: Path, name: str, record: object) -> Path:
    """The weights file a manifest record names, checked: a record is an object with a plain file name (no
    folders, so it cannot point outside the weights folder) and a sha256, and the file exists."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) or not isinstance(
            record.get("sha256"), str):
        raise CheckpointError(f"{manifest_path}: {name}'s record needs 'file' and 'sha256' strings; reinstall "
                              f"effigy or run `effigy zoo train {name}`.")
    file = record["file"]
    if Path(file).name != file or file in ("", ".", ".."):
        raise CheckpointError(f"{manifest_path}: {name}'s file {file[:80]!r} is not a plain file name in the weights "
                              "folder; the manifest is damaged.")
    path = manifest_path.parent / file
    if not path.is_file():
        raise CheckpointError(f"{path} is {'a folder, not a weights file' if path.is_dir() else 'missing'}; "
                              f"reinstall effigy or run `effigy zoo train {name}`.")
    return path


def train_zoo_model(
    name: str, weights_dir: str | Path = WEIGHTS_DIR, progress: Callable[[int, float], None] | None = None,
    **overrides
) -> Path:
    """Run the seeded training command for ``name`` and write its weights and manifest record.

    The output folder is created (and checked writable) before training starts, so a long run never
    ends without its weights. Resumable models keep their training state in ``<out>/<name>.training/``
    and continue from it when the command is run again with the same settings."""
    entry = zoo_entry(name)
    config = entry.config_cls(**overrides)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(weights_dir, os.W_OK):
        raise CheckpointError(f"cannot write to {weights_dir}; choose another --out folder before training.")
    read_manifest(weights_dir / "MANIFEST.json")  # a damaged manifest there is refused now, not after training
    extra = {"checkpoint_dir": training_state_dir(name, weights_dir)} if entry.resumable else {}
    return write_zoo_weights(name, entry.train(config, progress, **extra), config, weights_dir)


def training_state_dir(name: str, weights_dir: Path) -> Path:
    return weights_dir / f"{name}.training"


def write_zoo_weights(name: str, model: nn.Module, config: object, weights_dir: str | Path = WEIGHTS_DIR,
                      record: dict | None = None) -> Path:
    """Store trained weights in the zoo's dtype and record their sha256 and config in the manifest (``record``:
    more fields of the entry, or another ``train_command``)."""
    from safetensors.torch import save_file

    entry = zoo_entry(name)
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{name}.safetensors"
    with replaced_atomically(path) as partial:
        save_file({k: v.detach().to(entry.dtype).contiguous() for k, v in model.state_dict().items()}, str(partial))
    manifest = read_manifest(weights_dir / "MANIFEST.json")
    manifest[name] = {
        "file": path.name,
        "sha256": sha256_of(path),
        "dtype": str(entry.dtype).removeprefix("torch."),
        "config": config.to_dict(),
        "train_command": f"effigy zoo train {name}",
        **(record or {}),
    }
    with replaced_atomically(weights_dir / "MANIFEST.json") as partial:
        partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path

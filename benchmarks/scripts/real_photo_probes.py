"""Probes for issue 45's real-photo bar (docs/notes/deepfake.md): fine-tune a shipped deepfake detector for a
few hundred steps with extra images in every batch, refit its operating point, and see how many faces of the
real photographs (astronaut, grace_hopper, whole and benignly processed; never trained on) it calls fake, and
what the world's test AUCs do. No model is shipped or written; each probe writes
benchmarks/results/checks/real_photo_probe_<kind>.{json,md}.

    python benchmarks/scripts/real_photo_probes.py jitter  deepfake-ce 400   # photometric jitter of the batches
    python benchmarks/scripts/real_photo_probes.py studio  deepfake-ce 400   # + crisp camera-less reals and fakes
    python benchmarks/scripts/real_photo_probes.py photo-sbi deepfake-ce 400
    python benchmarks/scripts/real_photo_probes.py lfw-sbi deepfake-authguard 400
        # + the LFW train identities' own photos (25x25 crops read whole, as the command reads a small image,
        # whole and processed) with their SBI fakes: does the LFW-photo row of calibration.md move, and at what cost
        # + faces of real photographs (insightface 2.1's sample images, the `photos` extra) with their own
        # self-blended fakes: effigy.detect.deepfake.photos.photo_sbi_pairs, what the shipped encoders now train on

Seed 0; about 4 minutes each on 2 cores.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from calibrate_deepfake import photo_faces  # noqa: E402

from effigy.detect.deepfake.calibration import fit_operating_point, lfw_photos  # noqa: E402
from effigy.detect.deepfake.data import training_batch_source  # noqa: E402
from effigy.detect.deepfake.photos import photo_sbi_pairs, sbi_pairs  # noqa: E402
from effigy.detect.deepfake.protocol import protocol_sets  # noqa: E402
from effigy.metrics.detection import auc  # noqa: E402
from effigy.models.training_state import training_step, warmup_cosine  # noqa: E402
from effigy.models.zoo import load_zoo_model  # noqa: E402
from effigy.worlds.deepfakes import _DEEPFAKE_KEY, _rng, forge  # noqa: E402
from effigy.worlds.faces import posed_live_face, real_faces, split_identities  # noqa: E402

EXTRA_PER_BATCH = 16
WHAT = {"jitter": "saturation, contrast, gamma and sharpness jitter on every batch (reals and fakes alike)",
        "studio": "16 crisp camera-less world faces and their SBI / swap fakes in every batch of 48",
        "photo-sbi": "16 faces of real photographs (insightface 2.1's sample images) and their SBI fakes in every "
                     "batch of 48",
        "lfw-sbi": "16 of the LFW train identities' own photos (read whole, and after benign processing) and their "
                   "SBI fakes in every batch of 48"}


def photometric(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Saturation, contrast, gamma and sharpness jitter, per image, on reals and fakes alike."""
    n = len(x)
    draw = lambda low, high: torch.exp(torch.empty(n, 1, 1, 1).uniform_(np.log(low), np.log(high), generator=g))  # noqa: E731
    grey = x.mean(1, keepdim=True)
    x = grey + draw(0.5, 2.2) * (x - grey)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((mean + draw(0.7, 1.8) * (x - mean)).clamp(1e-4, 1)) ** draw(0.5, 1.5)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return (x + torch.empty(n, 1, 1, 1).uniform_(-0.5, 1.5, generator=g) * (x - blur)).clamp(0, 1)


def studio_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """The train identities' posed faces before any camera, sharpened, with SBI and swap fakes of them."""
    ids = [int(i) for i in split_identities("train")]
    images, fake = [], []
    for identity in ids:
        for k in range(6):
            live, pose = posed_live_face(real_faces()[identity], identity, _rng(5000 + k, _DEEPFAKE_KEY, identity, 9, 0))
            rng = _rng(5000 + k, _DEEPFAKE_KEY, identity, 9, 1)
            donor = int(rng.choice([d for d in ids if d != identity]))
            forgery = forge("sbi", live, pose, rng) if k % 2 == 0 else forge("swap", live, pose, rng,
                                                                                (donor, real_faces()[donor]))
            images += [live, forgery.image]
            fake += [False, True]
    x = torch.from_numpy(np.stack(images).astype(np.float32))
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return (2 * x - blur).clamp(0, 1), torch.tensor(fake)


def photo_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """The shipped photo-SBI pairs (effigy.detect.deepfake.photos, seed 0) as (images, fake)."""
    pairs = photo_sbi_pairs(0)
    return torch.from_numpy(pairs.images), torch.from_numpy(pairs.fake)


def lfw_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """The LFW train identities' photos, whole and processed, each twice with an SBI fake of it (seed 0)."""
    pairs = sbi_pairs(lfw_photos("train"), np.random.default_rng([0, 46]), 2, 0, domain="lfw photo")
    return torch.from_numpy(pairs.images), torch.from_numpy(pairs.fake)


def report(tag: str, model, config, test_faces: np.ndarray, lfw_test: np.ndarray) -> dict:
    """The refitted operating point, the real-photo faces and LFW test photos called fake at it, and the world's
    test AUCs."""
    point = fit_operating_point(model, config)
    model.calibration_temperature.fill_(point["temperature"])
    with torch.no_grad():
        p = model(torch.from_numpy(test_faces)).numpy()
        lfw = model(torch.from_numpy(lfw_test)).numpy()
        aucs = {s.name: auc(model(torch.from_numpy(s.data.images)).numpy(), s.data.fake) for s in protocol_sets(config)}
    row = {"model": tag, "threshold": point["threshold"], "photo_faces_called_fake": int((p >= point["threshold"]).sum()),
           "photo_faces": len(p), "p_fake": [float(v) for v in p],
           "lfw_test_photos_called_fake": int((lfw >= point["threshold"]).sum()), "lfw_test_photos": len(lfw), **aucs}
    print(row, flush=True)
    return row


def main(kind: str, name: str, steps: int) -> None:
    test_faces = photo_faces()
    lfw_test = lfw_photos("test")
    extra = {"jitter": None, "studio": studio_pairs, "photo-sbi": photo_pairs, "lfw-sbi": lfw_pairs}[kind]
    extra = extra() if extra else None
    model, config = load_zoo_model(name)
    rows = [report(f"{name} as shipped", model, config, test_faces, lfw_test)]
    source, g = training_batch_source(config), torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    model.train()
    for step in range(steps):
        images, fake, _, _ = source(g)
        if extra is None:
            images = photometric(images, g)
        else:
            picked = torch.randint(len(extra[0]), (EXTRA_PER_BATCH,), generator=g)
            images, fake = torch.cat([images, extra[0][picked]]), torch.cat([fake, extra[1][picked]])
        loss = F.binary_cross_entropy_with_logits(model.logit(images), fake.float())
        training_step(optimizer, loss, step, 1e-4 * warmup_cosine(step, steps, warmup=20))
    model.eval()
    rows.append(report(f"{name} + {steps} steps ({kind})", model, config, test_faces, lfw_test))
    write(kind, name, steps, rows)


def write(kind: str, name: str, steps: int, rows: list[dict]) -> None:
    from effigy.evaluate.measure import machine_facts
    from effigy.evaluate.report import machine_line, markdown_table, write_results

    command = f"python benchmarks/scripts/real_photo_probes.py {kind} {name} {steps}"
    record = {"script": command, "seed": 0, "rows": rows, "machine": machine_facts()}
    sets = [k for k in rows[0] if k.startswith(("in distribution", "unseen"))]
    table = [{**r, "called": f"{r['photo_faces_called_fake']} of {r['photo_faces']}",
              "lfw": f"{r['lfw_test_photos_called_fake']} of {r['lfw_test_photos']}",
              "scores": ", ".join(f"{v:.2f}" for v in r["p_fake"])} for r in rows]
    text = [f"# Real-photo probe: {kind} (issue 45, not shipped)", "",
            f"`{command}` (seed 0): {name} fine-tuned {steps} steps with {WHAT[kind]}, its operating point refitted "
            "(calibrate_deepfake's rule: each kind of dev real within 5%); the faces found in the real photographs "
            "(astronaut, grace_hopper, whole and processed; never trained on) and the LFW test identities' own "
            "photos called fake at it, and the world's test AUCs. See "
            "docs/notes/deepfake.md.  ", machine_line(record["machine"]), "",
            markdown_table(table, [("model", "model"), ("threshold", "refitted threshold"),
                                   ("called", "photo faces called fake"), ("scores", "their P(fake)"),
                                   ("lfw", "LFW test photos called fake"),
                                   *[(k, f"AUC {k}") for k in sets]]), ""]
    write_results(record, "\n".join(text), Path("benchmarks/results/checks"), f"real_photo_probe_{kind.replace('-', '_')}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

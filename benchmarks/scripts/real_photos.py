"""Are real photographs called fake? (issue 45, first step: photos in, faces found)

The real photographs that ship in installed packages (scikit-image's astronaut and cameraman, matplotlib's
grace_hopper), each given whole and after benign processing (a loose crop around the middle, half size, JPEG at
quality 60, 30% brighter), through the deepfake detectors two ways: as `effigy detect deepfake` read them before
(the whole image resized to the model's 64x64 input) and as it reads them now (faces found by dlib's detector,
framed like the LFW crops, cut in colour; "no face found" otherwise). Calibrated P(fake) per face and how many
are called fake at each model's recorded operating threshold (`calibrate_deepfake.py`: temperature-scaled, the
threshold chosen on the world's dev identities' real captures and their LFW photos, each kind at 5% BPCER).

    python benchmarks/scripts/real_photos.py      # ~1 min on 2 cores

Writes benchmarks/results/checks/real_photos.{json,md}.
"""
from pathlib import Path

import numpy as np
from PIL import Image

from effigy.detect.deepfake.model import fake_scores
from effigy.detect.faces import benign_variants, find_faces
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector

OUT = Path("benchmarks/results/checks")
MODELS = ("deepfake-authguard", "deepfake-ce", "deepfake-clip")


def photos() -> dict[str, Image.Image]:
    from matplotlib import cbook
    from skimage import data

    return {"astronaut": Image.fromarray(data.astronaut()),
            "camera": Image.fromarray(data.camera()).convert("RGB"),
            "grace_hopper": Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")}


def processed(photo: Image.Image) -> dict[str, Image.Image]:
    """The photo whole and after each benign processing (effigy.detect.faces.benign_variants)."""
    return benign_variants(photo)


def whole_resized(image: Image.Image) -> np.ndarray:
    """What the command read before faces were found: the whole picture at the model's input size."""
    from effigy.worlds.faces import SIZE, from_pil

    return from_pil(image.resize((SIZE, SIZE), Image.BILINEAR))


def main() -> None:
    detectors = {name: load_detector(name, DEEPFAKE_TASK) for name in MODELS}
    models = {name: d.model for name, d in detectors.items()}
    thresholds = {name: d.threshold for name, d in detectors.items()}
    rows = []
    for photo_name, photo in photos().items():
        for processing, image in processed(photo).items():
            faces = find_faces(image)
            row = {"photo": photo_name, "processing": processing, "size": f"{image.width}x{image.height}",
                   "faces": len(faces), "status": "scored" if faces else "no face found"}
            for name, model in models.items():
                row[f"{name}_whole"] = float(fake_scores(model, whole_resized(image)[None])[0])
                row[f"{name}_faces"] = [float(p) for p in fake_scores(model, np.stack([f.image for f in faces]))] \
                    if faces else []
            rows.append(row)
    summary = {}
    for name in MODELS:
        whole = [r[f"{name}_whole"] for r in rows]
        faces = [p for r in rows for p in r[f"{name}_faces"]]
        summary[name] = {"threshold": thresholds[name], "whole_called_fake": sum(p >= thresholds[name] for p in whole),
                         "whole_images": len(whole), "faces_called_fake": sum(p >= thresholds[name] for p in faces),
                         "faces": len(faces),
                         "no_face_found": sum(r["faces"] == 0 for r in rows)}
    record = {"script": "benchmarks/scripts/real_photos.py", "thresholds": thresholds, "rows": rows,
              "summary": summary, "machine": machine_facts()}
    table = [{"photo": r["photo"], "processing": r["processing"], "size": r["size"], "faces": r["faces"],
              **{f"{n}_whole": r[f"{n}_whole"] for n in MODELS},
              **{f"{n}_faces": ", ".join(f"{p:.3f}" for p in r[f"{n}_faces"]) or r["status"] for n in MODELS}}
             for r in rows]
    columns = [("photo", "photo"), ("processing", "processing"), ("size", "size"), ("faces", "faces found"),
               *[(f"{n}_whole", f"{n}: whole image") for n in MODELS], *[(f"{n}_faces", f"{n}: faces") for n in MODELS]]
    counts = [{"model": n, "threshold": s["threshold"], "whole": f"{s['whole_called_fake']} of {s['whole_images']}",
               "faces": f"{s['faces_called_fake']} of {s['faces']}", "none": s["no_face_found"]}
              for n, s in summary.items()]
    text = ["# Real photographs: called fake? (issue 45)", "",
            "`python benchmarks/scripts/real_photos.py`: the real photographs that ship in installed packages, whole "
            "and after benign processing, through each deepfake detector as the whole image resized to 64x64 (how "
            "`effigy detect deepfake` read a photo before) and as the faces found in it (how it reads one now). "
            "Calibrated P(fake); called fake at each model's recorded operating threshold (temperature-scaled, "
            "chosen on the forgery world's dev identities' real captures and their LFW photos, each kind at 5% "
            "BPCER, by `calibrate_deepfake.py`).  ",
            machine_line(record["machine"]), "", "## Called fake", "",
            markdown_table(counts, [("model", "model"), ("threshold", "threshold"), ("whole", "whole image called fake"),
                                    ("faces", "faces called fake"), ("none", "images with no face found")]),
            "", "## P(fake) per image", "", markdown_table(table, columns), ""]
    write_results(record, "\n".join(text), OUT, "real_photos")


if __name__ == "__main__":
    main()

"""Markdown, JSON and the picture for ``effigy bench deepfake``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from effigy.bench.contract import Bench, in_folder
from effigy.bench.deepfake import DeepfakeBenchSettings, run_deepfake_bench
from effigy.evaluate.pictures import labelled_grid
from effigy.evaluate.report import machine_line, markdown_table, write_results

AVERAGE_COLUMNS = [("model", "model"), ("contrastive", "contrastive term"), ("in_distribution_auc", "in-distribution AUC"),
                   ("unseen_auc", "unseen families AUC"), ("unseen_eer", "EER"), ("unseen_ap", "AP"),
                   ("unseen_acc", "ACC"), ("unseen_domain_auc", "unseen domain AUC")]
ROW_COLUMNS = [("model", "model"), ("test_set", "test set"), ("images", "images"), ("fakes", "fakes"), ("auc", "AUC"),
               ("eer", "EER"), ("ap", "AP"), ("acc", "ACC")]
HELD_OUT_COLUMNS = [("face", "face"), ("kind", "image"), ("images", "images"), ("mean_p_fake", "mean P(fake)"),
                    ("called_fake", "called fake"), ("correct", "correct")]
PGD_COLUMNS = [("model", "model"), ("epsilon", "epsilon"), ("steps", "steps"), ("fakes_attacked", "fakes attacked"),
               ("clean_auc", "AUC clean"), ("pgd_auc", "AUC under PGD"), ("fakes_called_fake_after", "fakes still called fake")]
EXPLAINER_COLUMNS = [("test_set", "test set"), ("images", "images"), ("llm_verdict_accuracy", "LLM verdict accuracy"),
                     ("encoder_accuracy", "encoder accuracy (0.5)"), ("difference_low", "LLM - encoder: 95% low"),
                     ("difference_high", "95% high"), ("unclear", "no verdict"),
                     ("explanation_names_truth", "explanation names region and artifact (fakes)"), ("chance", "chance"),
                     ("example", "an answer to a fake")]
PICTURE = "deepfake_families.png"
GENERATOR_PICTURE = "deepfake_synthetic_faces.png"
GENERATOR_COLUMNS = [("what", "crops"), ("fid", "Frechet distance to the test crops"),
                     ("nearest", "median MSE to the nearest train crop"), ("detail", "fine detail")]


def render_markdown(result: dict, command: str) -> str:
    s = result["settings"]
    captions = result.get("captions")
    caption_text = ""
    if captions:
        rates = [{"kind": k, "noise_rate": v} for k, v in captions["noise_rate"].items()]
        examples = [{"kind": k, "caption": c} for k, cs in captions["examples"].items() for c in cs]
        caption_text = (f"\n\n## Captions\n\nWritten by {captions['writer']}, {captions['per_kind']} per kind of image, "
                        "from the kind's metadata. Noise rate: the share that does not name the region and an "
                        "artifact of the family (fakes) or that describes an alteration (reals).\n\n"
                        + markdown_table(rates, [("kind", "kind"), ("noise_rate", "noise rate")])
                        + "\n\n" + markdown_table(examples, [("kind", "kind"), ("caption", "caption (first three)")]))
    explainer = result.get("explainer")
    explainer_text = ""
    if explainer:
        explainer_text = ("\n\n## Explained verdicts through SmolLM2 (`deepfake-explainer`)\n\nThe projector from "
                          "`deepfake-authguard`'s feature map into SmolLM2-135M-Instruct, asked \"Is this face real or "
                          f"fake, and why?\" (greedy, {s['explained_images']} seeded images per test set). Chance: the "
                          "same answers given to other fakes of the set.\n\n"
                          + markdown_table(explainer, EXPLAINER_COLUMNS))
    return (f"# Deepfake detection: AuthGuard-style encoder vs its baselines\n\nCommand: `{command}`\n\n"
            "Each model is EfficientNet-Lite0 from ImageNet weights, trained on the forgery world's train identities "
            "with SBI and face-swap fakes in the phone, webcam and laptop domains, and on two real photographs' "
            "faces with their SBI fakes (`effigy zoo train NAME`); "
            "tested on the test identities: in distribution, on each unseen family (reenactment, upsampler "
            "artifacts, synthetic faces) and on the unseen kiosk domain (every family). Scores are P(fake); DeepfakeBench's frame "
            f"AUC, EER, AP and ACC at 0.5. Seed {s['seed']}. {machine_line(result['machine'])}\n\n"
            f"![families]({PICTURE})\n\n## At a glance (unseen families: mean over them)\n\n"
            + markdown_table(result["averages"], AVERAGE_COLUMNS)
            + "\n\n## Every test set\n\n" + markdown_table(result["rows"], ROW_COLUMNS)
            + held_out_heading(result.get("operating_point"))
            + markdown_table(result["held_out"], HELD_OUT_COLUMNS) + generator_markdown(result.get("generator"))
            + quantized_markdown(result.get("quantized_generators"))
            + f"\n\n## Under PGD (white-box, L-inf {s['epsilon']:.4g}, fakes pushed towards real)\n\n"
            + markdown_table(result["pgd"], PGD_COLUMNS) + explainer_text + caption_text + "\n")


def held_out_heading(point: dict | None) -> str:
    """The held-out section's title: at the recorded operating point, or raw at 0.5 before one existed."""
    if not point:
        return "\n\n## Held-out real faces (`deepfake-authguard`, every domain, at 0.5)\n\n"
    return (f"\n\n## Held-out real faces (`deepfake-authguard`, every domain, at its recorded threshold "
            f"{point['threshold']:.4g}, P(fake) temperature-scaled by {point['temperature']:.4g})\n\n")


QUANTIZED_COLUMNS = [("model", "detector"), ("generator", "dit-faces"), ("auc", "AUC"),
                     ("mean_p_fake_fakes", "mean P(fake) of its fakes (raw)"), ("difference", "AUC - FP's AUC"),
                     ("interval", "95% interval (test identities resampled)")]


def quantized_markdown(section: dict | None) -> str:
    """Issue 45, item 8: the synthetic family rendered from quantized generators, AUC per generator."""
    if not section:
        return ""
    rows = [{**r, **({"difference": r["auc_minus_fp"]["difference"],
                      "interval": f"[{r['auc_minus_fp']['low']:.4f}, {r['auc_minus_fp']['high']:.4f}]"}
                     if "auc_minus_fp" in r else {"difference": "", "interval": ""})} for r in section["rows"]]
    detail = ", ".join(f"{name} {value:.4f}" for name, value in section["pool_detail"].items())
    return ("\n\n## Faces from a quantized generator: easier or harder to catch?\n\nThe synthetic family's test "
            "captures (every test identity and domain, the same poses, lights and draws) rendered from the pool of "
            "the shipped `dit-faces` in FP and quantized by each recipe (`effigy.quantize`, calibrated on 16 faces "
            "of another seed where the recipe needs it), scored by each detector. Fine detail of each pool "
            f"(mean absolute neighbour difference): {detail}.\n\n" + markdown_table(rows, QUANTIZED_COLUMNS))


def generator_markdown(generator: dict | None) -> str:
    """The synthetic family's generator beside real crops (a results file from before it existed has none)."""
    if not generator:
        return ""
    g = generator
    rows = [{"what": f"generated ({g['generated']}; the first 60 for the distance)", "fid": g["fid_to_test_generated"],
             "nearest": g["nearest_train_mse_generated"], "detail": g["detail_generated"]},
            {"what": "real: the 60 train crops (the distance), the 25 test crops (the rest)",
             "fid": g["fid_to_test_real_train"], "nearest": g["nearest_train_mse_real_test"],
             "detail": g["detail_real_test"]}]
    return ("\n\n## The synthetic family's generator (`dit-faces`)\n\nGrey 25x25 crops from the face DiT trained on "
            "the 60 train crops, beside real ones; Frechet distance in ImageNet EfficientNet-Lite0 features (96 px).\n\n"
            f"![generated and real crops]({GENERATOR_PICTURE})\n\n" + markdown_table(rows, GENERATOR_COLUMNS))


def generator_picture(path: Path, seed: int = 0) -> Path:
    """16 generated crops (the synthetic family's pool) above 16 real test crops."""
    from effigy.worlds.deepfakes import synthetic_crops
    from effigy.worlds.faces import real_faces, split_identities

    to_grid = lambda crops: torch.from_numpy(np.ascontiguousarray(crops[:16])).unsqueeze(1) * 2 - 1  # noqa: E731
    return labelled_grid({"generated": to_grid(synthetic_crops(seed)),
                          "real (test)": to_grid(real_faces()[split_identities("test")])}, path, scale=3, label_width=80)


def families_picture(path: Path, seed: int = 0) -> Path:
    """One test identity: real and each forgery family (rows) in every domain (columns)."""
    from effigy.worlds.deepfakes import FAMILIES, render_forgery
    from effigy.worlds.faces import DOMAINS, real_faces, split_identities

    identities = [int(i) for i in split_identities("test")]
    identity = identities[0]
    rows = {}
    for family in ("real", *FAMILIES):
        images = np.stack([render_forgery(identity, real_faces()[identity], family, domain, 0, seed, identities)[0]
                           for domain in DOMAINS])
        rows[family] = torch.from_numpy(images) * 2 - 1
    return labelled_grid(rows, path, scale=2, label_width=110, column_labels=list(DOMAINS))


def write_deepfake_report(result: dict, folder: Path, command: str) -> dict[str, Path]:
    """``<folder>/deepfake_authguard.{json,md}`` and the families picture."""
    json_path, md_path = write_results(result, render_markdown(result, command), folder, "deepfake_authguard")
    seed = result["settings"]["seed"]
    return {"json": json_path, "markdown": md_path, "picture": families_picture(folder / PICTURE, seed),
            "generator_picture": generator_picture(folder / GENERATOR_PICTURE, seed)}


BENCH = Bench("deepfake", DeepfakeBenchSettings, run_deepfake_bench, in_folder(write_deepfake_report),
              lambda result, s: ({**result, "rows": result["averages"]}, AVERAGE_COLUMNS,
                                 f"deepfake-authguard and baselines (seed {s.seed})"),
              model=lambda s: "deepfake-authguard")

"""``effigy detect ...``: detectors of presentation attacks (``fas``) and of deepfakes (``deepfake``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from effigy.cli import bench
from effigy.cli._common import (
    JSON,
    SEED,
    check_choice,
    command_line,
    console,
    deprecated,
    echo_json,
    finite,
    parse_domains,
    print_rows,
    progress,
    writable_file,
    writable_folder,
)
from effigy.errors import EffigyError


class ScoreByDefault(TyperGroup):
    """A command group whose ``score`` command is also reached without its name: ``effigy detect deepfake
    photo.jpg`` is ``effigy detect deepfake score photo.jpg`` (the spelling from before the group had ``eval``)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["score", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(help="Detect presentation attacks and generated images.", no_args_is_help=True)
fas_app = typer.Typer(help="Face anti-spoofing: train the prototype model, evaluate it, adapt it to a new camera.",
                      no_args_is_help=True)
app.add_typer(fas_app, name="fas")
deepfake_app = typer.Typer(cls=ScoreByDefault, no_args_is_help=True,
                           help="Deepfake detection: score photos (the default), evaluate on a team's own data.")
app.add_typer(deepfake_app, name="deepfake")
ADAPTORS = {"none": "no adaptation", "ot-shift": "training-free OT prototype shift", "ot-one-class":
            "OT prototype shift from live samples only", "geodesic-mixup": "OT geodesic mixup classifier",
            "t3a": "T3A (unlabelled)", "linear-mixup": "mixup baseline"}
DEEPFAKE_MODEL = typer.Option("deepfake-authguard", help="deepfake-authguard, deepfake-ce, deepfake-clip, or the "
                              "--out folder of `effigy detect deepfake train --data`.")
THRESHOLD = typer.Option(None, min=0.0, max=1.0, callback=finite, help="P(fake) at which a face is called fake "
                         "(default: the threshold stored with the model, else 0.5).")
TEAM_STEPS = 300
TRAIN_OUT = typer.Option(Path("zoo_weights"), help="Folder for the weights and their manifest.")
TARGET_BPCER = typer.Option(0.05, min=0.0, max=0.5, callback=finite, help="With --data: the share of the val "
                            "split's bona fide faces the stored threshold may reject.")
ONNX_OUT = typer.Option(..., "--onnx", help="The .onnx file to write (a .onnx.json sidecar beside it).")
METRIC_COLUMNS = [("domain", "domain"), ("hter", "HTER"), ("apcer", "APCER"), ("bpcer", "BPCER"), ("auc", "AUC"),
                  ("tpr_at_fpr_1", "TPR@FPR=1%"), ("threshold", "threshold")]


def _one_domain(text: str, option: str) -> str:
    """Exactly one capture domain (an empty value is an error, never a default)."""
    from effigy.worlds.faces import DOMAINS

    return check_choice(text.strip(), tuple(DOMAINS), option)


@fas_app.command("train")
def fas_train(
    without: Optional[str] = typer.Option(None, help="Leave this capture domain out (its leave-one-domain-out model)."),
    steps: Optional[int] = typer.Option(None, min=1, max=1_000_000, help="Training steps (default: the zoo's; "
                                        f"with --data {TEAM_STEPS})."),
    out: Path = TRAIN_OUT,
    data: Optional[Path] = typer.Option(None, help="Fine-tune on a team's own data: live/ and spoof/<species>/ "
                                        "folders under train/ (and val/ for the threshold), optionally under one "
                                        "folder per capture domain."),
    model: str = typer.Option("fas-protonet", help="With --data: the model to start from (a zoo name or a "
                              "trained folder)."),
    crops: bool = typer.Option(False, "--crops", help="With --data: the images are face crops already."),
    domains: Optional[str] = typer.Option(None, help="With --data: the capture-domain folders to train on, "
                                          "comma-separated (a leave-one-domain-out protocol; default: all)."),
    target_bpcer: float = TARGET_BPCER,
    seed: int = SEED,
    as_json: bool = JSON,
) -> None:
    """Train fas-protonet (or fas-protonet-without-DOMAIN) on the face world, seeded (`effigy zoo train` under its
    face name), or with --data fine-tune a model on a team's own folders and choose its threshold on their val
    split's live faces."""
    from effigy.cli.zoo import zoo_train
    from effigy.detect.fas.zoo import SHIPPED, without_domain
    from effigy.workflows.detectors import FAS_TASK

    if data is None:
        zoo_train(SHIPPED if without is None else without_domain(_one_domain(without, "--without")), out, steps)
        return
    if without is not None:
        raise EffigyError("--without picks a face-world model; with --data the model is --model: drop --without.")
    _train_team(FAS_TASK, data, model, out, steps, crops, target_bpcer, seed, as_json, command_line(),
                domains=team_domains(domains))


def _train_team(task: str, data: Path, model: str, out: Path, steps: Optional[int], crops: bool,
                target_bpcer: float, seed: int, as_json: bool, command: str, compression: str = "c23",
                root: Optional[Path] = None, domains: Optional[list[str]] = None) -> None:
    """``train --data``: fine-tune, choose the threshold on the val split's bona fide faces, write the folder."""
    from effigy.workflows.detectors import TeamData, prepare_team_training, train_team_detector

    check_detector_model(model, task)
    settings = TeamData(data, model, out, steps or TEAM_STEPS, seed, crops, target_bpcer, compression, root,
                        None if domains is None else tuple(domains))
    run = prepare_team_training(task, settings)
    with progress(not as_json) as reporter:
        advance = reporter(f"fine-tuning {model} on {data}", settings.steps)
        summary = train_team_detector(task, run, command, progress=lambda _s, _l: advance(),
                                      prepare_out=lambda folder: writable_folder(folder, "--out"))
    if as_json:
        echo_json(summary)
        return
    point = summary.get("operating_point")
    console.print(f"wrote {summary['weights']}: {summary['trained_frames']} faces ({summary['trained_attacks']} "
                  "attacks); threshold " + (f"{point['threshold']:.4f} (at most {100 * point['target_bpcer']:g}% of "
                                            f"{point['bonafide_faces']} val bona fide faces rejected)"
                                            if summary["threshold_from_val"] else "kept from the base model") +
                  f". Evaluate it with --model {out}.", soft_wrap=True)


def check_detector_model(model: str, task: str) -> None:
    """One clear error, before anything loads, for a --model that is neither a trained folder nor a zoo model of
    ``task``."""
    from effigy.models.zoo import ZOO
    from effigy.workflows.detectors import is_trained_folder

    if not is_trained_folder(model):
        check_choice(model, ZOO.names(task), "--model")


@fas_app.command("eval")
def fas_eval(
    model: str = typer.Option("fas-protonet", help="fas-protonet or fas-protonet-without-DOMAIN."),
    domains: Optional[str] = typer.Option(None, help="Capture domains to test on, comma-separated (default: all; "
                                          "with --data the team's domain folders)."),
    data: Optional[Path] = typer.Option(None, help="A team's own data instead of the face world: live/ and "
                                        "spoof/<species>/ folders, optionally under train/ val/ test/ and under one "
                                        "folder per capture domain."),
    split: str = typer.Option("test", help="With --data: train, val or test."),
    crops: bool = typer.Option(False, "--crops", help="With --data: the images are face crops already."),
    as_json: bool = JSON,
) -> None:
    """HTER / APCER / BPCER (at the source development set's equal-error threshold), AUC and TPR@FPR=1% on the
    face world's test identities per domain, or with --data on a team's folders per domain, with APCER per
    attack species."""
    from effigy.detect.fas.model import live_scores
    from effigy.detect.fas.protocol import species_report
    from effigy.worlds.faces import render

    if data is not None:
        _fas_eval_folders(model, data, split, crops, as_json, team_domains(domains))
        return
    names = parse_domains(domains)
    loaded, config, threshold = _load_fas(model)
    test = render("test", names, config.attacks)
    scores = live_scores(loaded, test.images)
    rows = [{**row, "trained_on": row["domain"] in config.domains}
            for row in species_report(scores, test.live, test.kind, test.domain, threshold)]
    if as_json:
        echo_json({"model": model, "threshold": threshold, "rows": rows})
    else:
        _print_species(rows, f"{model} on the face world's test identities")


@fas_app.command("export")
def fas_export(
    model: str = typer.Option("fas-protonet", help="fas-protonet or fas-protonet-without-DOMAIN."),
    onnx: Path = ONNX_OUT,
    as_json: bool = JSON,
) -> None:
    """The anti-spoofing model as ONNX (face crops [N, 3, 64, 64] in, P(live) out, prototypes inside), checked
    against PyTorch on 32 sample crops; the sidecar carries the source threshold."""
    from effigy.detect.export import LiveScore, export_onnx, sample_crops

    _check_onnx_path(onnx)
    loaded, config, threshold = _load_fas(model)
    record = export_onnx(LiveScore(loaded, config.scale), onnx, sample_crops(),
                         {"model": model, "sha256": _model_sha256(model), "score": "P(live)", "threshold": threshold})
    _print_export(onnx, record, as_json)


def team_domains(text: Optional[str]) -> Optional[list[str]]:
    """--domains with --data: the team's capture-domain folder names (checked against the data when read)."""
    if text is None:
        return None
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise EffigyError(f"--domains {text!r}: name one or more capture-domain folders, comma-separated.")
    return names


def _fas_eval_folders(model: str, data: Path, split: str, crops: bool, as_json: bool,
                      domains: Optional[list[str]] = None) -> None:
    """``fas eval --data``: the frames read and checked before the model loads, each face scored."""
    import numpy as np

    from effigy.detect.datasets import ANTI_SPOOFING, check_both_classes, keep_domains, read_domains, score_faces
    from effigy.detect.fas.model import live_scores
    from effigy.detect.fas.protocol import folder_report

    frames = keep_domains(read_domains(data, split, ANTI_SPOOFING), domains, data)
    check_both_classes(frames, data, split, ANTI_SPOOFING)
    loaded, config, threshold = _load_fas(model)
    scores = score_faces(frames, lambda faces: live_scores(loaded, faces), crops)
    report = folder_report(scores, frames, threshold)
    if as_json:
        echo_json({"model": model, "data": str(data), "split": split, "threshold": threshold,
                   "no_face_found": int(np.isnan(scores).sum()), "rows": report})
        return
    _print_species(report, f"{model} on {data} ({split})")


def _print_species(rows: list[dict], title: str) -> None:
    """The 30107-3 table: HTER, pooled APCER, BPCER, AUC, APCER per attack species and ACER, per domain."""
    species = sorted({k for r in rows for k in r if k.startswith("apcer_") and k != "apcer_worst"})
    print_rows(rows, [("domain", "domain"), ("frames", "frames"), *METRIC_COLUMNS[1:5],
                      *[(k, f"APCER {k[6:]}") for k in species], ("acer", "ACER")], title)


@fas_app.command("score")
def fas_score(
    images: list[Path] = typer.Argument(..., help="Photos or face crops, or folders of them (PNG, JPEG, WebP, BMP): "
                                        "faces are found and framed first."),
    model: str = typer.Option("fas-protonet", help="fas-protonet or fas-protonet-without-DOMAIN."),
    adapted: Optional[Path] = typer.Option(None, help="An adapted head from `adapt --out` to score with."),
    crops: bool = typer.Option(False, "--crops", help="The images are face crops already: skip the face search."),
    as_json: bool = JSON,
) -> None:
    """P(live) of each face in each image and the decision at the model's source threshold (its development
    set's equal-error threshold), with the model's prototypes or an adapted head. An image without a face gets
    "no face found", not a decision."""
    from effigy.detect.faces import NO_FACE
    from effigy.detect.fas.adapt import ClientHead, SourceView
    from effigy.detect.fas.client import load_adapted
    from effigy.detect.fas.model import embed

    found = faces_of_files(images, crops)  # every file read and searched before the model loads
    batch = stacked_faces(found)
    loaded, config, threshold = _load_fas(model)
    source = SourceView(loaded.prototypes().detach(), config.scale)
    head = (ClientHead(source.prototypes, config.scale) if adapted is None
            else load_adapted(adapted, model, source, _model_sha256(model)))
    scores = iter(head(embed(loaded, batch)).numpy() if len(batch) else [])
    rows = []
    for path, faces in found:
        if not faces:
            rows.append({"image": str(path), "face": None, "status": NO_FACE, "p_live": None, "decision": None})
        for index, face in enumerate(faces):
            score = float(next(scores))
            rows.append({"image": str(path), "face": index, **face.to_dict(), "status": "scored", "p_live": score,
                         "decision": "live" if score >= threshold else "attack"})
    if as_json:
        echo_json({"model": model, "threshold": threshold, "rows": rows})
    else:
        print_rows([{**r, "decision": r["decision"] or r["status"]} for r in rows],
                   [("image", "image"), ("face", "face"), ("p_live", "P(live)"),
                    ("decision", f"decision (threshold {threshold:.3f})")], f"{model}")


@fas_app.command("adapt")
def fas_adapt(
    model: str = typer.Option("fas-protonet-without-webcam", help="The base model (seen only through features)."),
    domain: Optional[str] = typer.Option(None, help="The world's capture domain to adapt to (without --live; "
                                         "default webcam)."),
    adaptor: str = typer.Option("ot-shift", help="One of: " + ", ".join(ADAPTORS) + "."),
    shots: Optional[int] = typer.Option(None, min=1, max=1000, help="World mode: labelled target samples per class "
                                        "(default 5)."),
    live: Optional[Path] = typer.Option(None, help="Your camera's live face crops (a folder): adapt to them."),
    spoof: Optional[Path] = typer.Option(None, help="With --live: your camera's attack crops (a folder)."),
    data: Optional[Path] = typer.Option(None, help="Your camera's labelled data as live/ and spoof/<species>/ "
                                        "folders (optionally under train/ val/ test/): adapt to --split of it."),
    split: str = typer.Option("train", help="With --data: the split to adapt on."),
    crops: bool = typer.Option(False, "--crops", help="With --data: the images are face crops already."),
    out: Optional[Path] = typer.Option(None, help="With --live or --data: write the adapted head here "
                                       "(.safetensors, and a .json beside it); score with it by `score --adapted`."),
    save_alias: Optional[Path] = typer.Option(None, "--save", hidden=True),
    seed: int = SEED,
    as_json: bool = JSON,
) -> None:
    """Adapt a base model to a camera with a few of its samples: the world's (a domain's dev identities, then
    tested on its test identities beside no adaptation) or your own (--live / --spoof crops, or --data folders;
    with --out)."""
    save = deprecated(save_alias, "--save", "--out", out)
    check_choice(adaptor, tuple(ADAPTORS), "--adaptor")
    if live is not None or spoof is not None or save is not None or data is not None:
        if domain is not None or shots is not None:
            raise EffigyError("--domain and --shots choose the world's samples; with --live / --spoof / --data / "
                              "--out your own samples are used: drop them.")
        if data is not None and (live is not None or spoof is not None):
            raise EffigyError("--data and --live / --spoof both give your samples; give one of them.")
        samples = (lambda: _team_faces(data, split, crops)) if data is not None else None
        _adapt_own_crops(model, adaptor, live, spoof, save, as_json, samples)
        return
    from effigy.detect.fas.adapt import SourceView
    from effigy.detect.fas.protocol import check_shots, domain_data, evaluate_adaptor

    shots = 5 if shots is None else shots
    check_shots(shots)
    name = _one_domain("webcam" if domain is None else domain, "--domain")
    loaded, config, _ = _load_fas(model)
    with progress(not as_json) as reporter:
        advance = reporter(f"rendering {name} and embedding it", 1)
        data = domain_data(loaded, config, name, seed)
        advance()
    source = SourceView(loaded.prototypes().detach(), config.scale)
    rows = []
    for key in dict.fromkeys(("none", adaptor)):
        report = evaluate_adaptor(_adaptor(key), source, data, shots, 1, seed)
        rows.append({"domain": f"{name}: {ADAPTORS[key]}", **report.to_dict()})
    if as_json:
        echo_json({"model": model, "domain": name, "shots": shots, "rows": rows})
    else:
        print_rows(rows, METRIC_COLUMNS, f"{model} adapted to {name} with {shots} samples per class")


def _team_faces(data: Path, split: str, crops: bool):
    """(face crops, live flags) of --split of a team's live/spoof folders (faces found unless --crops)."""
    import numpy as np

    from effigy.detect.datasets import ANTI_SPOOFING, face_crops, read_domains
    from effigy.errors import AdaptationError

    frames = read_domains(data, split, ANTI_SPOOFING)
    images, rows = face_crops(frames, crops)
    if len(rows) == 0:
        raise AdaptationError(f"{data} ({split}): no face found in any frame; give face photos, or --crops.")
    return images, np.array([not frames[i].fake for i in rows])


def _adapt_own_crops(model: str, adaptor: str, live: Optional[Path], spoof: Optional[Path], save: Optional[Path],
                     as_json: bool, samples=None) -> None:
    """Adapt to the user's own labelled crops (the --live / --spoof folders, or ``samples()``: (images, live
    flags)) and write the adapted head."""
    import numpy as np
    import torch

    from effigy.cli._common import writable_file
    from effigy.detect.fas.adapt import ClientHead, SourceView
    from effigy.detect.fas.client import check_save_path, labelled_faces, save_adapted
    from effigy.detect.fas.model import embed
    from effigy.errors import AdaptationError
    if save is None:
        raise AdaptationError("--live / --spoof / --data adapt to your own samples: give --out FILE.safetensors "
                              "for the result.")
    check_save_path(writable_file(save, "--out"))
    if live is not None and spoof is not None and live.resolve() == spoof.resolve():
        raise AdaptationError(f"--live and --spoof are the same folder ({live}); give live crops and attack crops "
                              "in two folders.")
    images, flags = labelled_faces(live, spoof) if samples is None else samples()  # all read before the model
    chosen = _adaptor(adaptor)
    loaded, config, _ = _load_fas(model)
    features = embed(loaded, images)
    source = SourceView(loaded.prototypes().detach(), config.scale)
    keep = np.flatnonzero(flags) if chosen.one_class else np.arange(len(flags))
    labels = torch.from_numpy(flags[keep].astype(np.int64)) if chosen.uses_labels else None
    head = chosen.fit(source, features[keep], labels)
    paths = save_adapted(save, head, {"model": model, "model_sha256": _model_sha256(model),
                                      "adaptor": adaptor, "live_crops": int(flags.sum()),
                                      "attack_crops": int((~flags).sum())})
    before = ClientHead(source.prototypes, config.scale)(features).numpy()
    after = head(features).numpy()
    table = [{"crops": kind, "count": int(mask.sum()), "before": float(before[mask].mean()),
              "after": float(after[mask].mean())} for kind, mask in (("live", flags), ("attack", ~flags)) if mask.any()]
    if as_json:
        echo_json({"model": model, "adaptor": adaptor, "rows": table, "files": [str(p) for p in paths]})
    else:
        print_rows(table, [("crops", "your crops"), ("count", "count"), ("before", "mean P(live) before"),
                           ("after", "after")], f"{model} adapted by {ADAPTORS[adaptor]} (fitted on these crops)")
        console.print("wrote " + ", ".join(str(p) for p in paths))


def _adaptor(key: str):
    from effigy.detect.fas import adapt

    return {"none": adapt.NoAdaptation, "ot-shift": adapt.OTPrototypes,
            "ot-one-class": lambda: adapt.OTPrototypes(one_class=True), "geodesic-mixup": adapt.GeodesicMixup,
            "t3a": adapt.T3A, "linear-mixup": adapt.LinearMixup}[key]()


def _load_fas(model: str):
    """(model, config, threshold) of a zoo name or a `fas train --data --out` folder: the threshold stored with
    it, else the source development set's equal-error threshold."""
    from effigy.detect.fas.protocol import source_threshold
    from effigy.workflows.detectors import FAS_TASK, load_detector

    check_detector_model(model, FAS_TASK)
    detector = load_detector(model, FAS_TASK)
    threshold = detector.threshold
    return detector.model, detector.config, (source_threshold(detector.model, detector.config)
                                             if threshold is None else threshold)


def _model_sha256(model: str) -> str | None:
    """The sha256 of a zoo name's or a trained folder's weights (what an adapted head or an export names)."""
    from effigy.models.zoo import read_manifest
    from effigy.workflows.detectors import is_trained_folder

    manifest = read_manifest(Path(model) / "MANIFEST.json") if is_trained_folder(model) else read_manifest()
    records = [manifest[model]] if model in manifest else list(manifest.values())
    return records[0].get("sha256") if len(records) == 1 else None


@deepfake_app.command("score")
def detect_deepfake(
    images: list[Path] = typer.Argument(..., help="Photos or face crops, or folders of them (PNG, JPEG, WebP, BMP): "
                                        "faces are found and framed first."),
    model: str = DEEPFAKE_MODEL,
    threshold: Optional[float] = THRESHOLD,
    crops: bool = typer.Option(False, "--crops", help="The images are face crops already: skip the face search."),
    explain: bool = typer.Option(False, "--explain", help="Ask SmolLM2 through deepfake-explainer for each "
                                 "face's answer (loads the LLM, ~20 s; deepfake-authguard only)."),
    as_json: bool = JSON,
) -> None:
    """P(fake) of each face in each image, the verdict, and the closest artifact description in the encoder's
    image-text space (the models trained with image-text contrast), or with --explain the LLM's answer. An image
    without a face gets "no face found", not a verdict."""
    import json

    from effigy.detect.deepfake.model import fake_scores
    from effigy.detect.deepfake.protocol import describe
    from effigy.detect.faces import NO_FACE
    from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector

    check_deepfake_model(model, explain)
    found = faces_of_files(images, crops)  # every file read and searched before the model loads
    batch = stacked_faces(found)
    rows = []
    detector = load_detector(model, DEEPFAKE_TASK)
    threshold = detector.operating_threshold(threshold)
    if len(batch):
        loaded = detector.model
        scores = fake_scores(loaded, batch)
        descriptions = iter(_llm_answers(batch) if explain else describe(loaded, batch))
        scored = iter(zip(scores, descriptions))
    for path, faces in found:
        if not faces:
            rows.append({"image": str(path), "face": None, "status": NO_FACE, "p_fake": None, "verdict": None,
                         "explanation": None})
        for index, face in enumerate(faces):
            score, description = next(scored)
            rows.append({"image": str(path), "face": index, **face.to_dict(), "status": "scored",
                         "p_fake": float(score), "verdict": "fake" if score >= threshold else "real",
                         "explanation": description})
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
    else:
        print_rows([{**r, "verdict": r["verdict"] or r["status"]} for r in rows],
                   [("image", "image"), ("face", "face"), ("p_fake", "P(fake)"), ("verdict", f"verdict (at {threshold:g})"),
                    ("explanation", "LLM answer" if explain else "closest description")], model)


@deepfake_app.command("train")
def deepfake_train(
    data: Path = typer.Option(..., help="A DeepfakeBench dataset JSON, or a folder with real/ and fake/<method>/ "
                              "under train/ (and val/ for the threshold)."),
    model: str = typer.Option("deepfake-authguard", help="The detector to start from: a zoo name or a trained "
                              "folder."),
    steps: int = typer.Option(TEAM_STEPS, min=1, max=1_000_000, help="Fine-tuning steps."),
    out: Path = TRAIN_OUT,
    target_bpcer: float = TARGET_BPCER,
    compression: str = typer.Option("c23", help="DeepfakeBench JSON: the compression level."),
    root: Optional[Path] = typer.Option(None, help="DeepfakeBench JSON: where relative frame paths start."),
    crops: bool = typer.Option(False, "--crops", help="The frames are face crops already: skip the face search."),
    seed: int = SEED,
    as_json: bool = JSON,
) -> None:
    """Fine-tune a deepfake detector on a team's own train split (cross-entropy, class-balanced batches) and store
    the threshold at which at most --target-bpcer of the val split's real faces are called fake; evaluate the
    result with `eval --model OUT`."""
    from effigy.workflows.detectors import DEEPFAKE_TASK

    _train_team(DEEPFAKE_TASK, data, model, out, steps, crops, target_bpcer, seed, as_json, command_line(),
                compression, root)


@deepfake_app.command("eval")
def deepfake_eval(
    data: Path = typer.Option(..., help="A DeepfakeBench dataset JSON (dataset_json/<dataset>.json), or a folder "
                              "with real/ and fake/<method>/ (optionally under train/, val/, test/)."),
    split: str = typer.Option("test", help="train, val or test."),
    model: str = DEEPFAKE_MODEL,
    threshold: Optional[float] = THRESHOLD,
    compression: str = typer.Option("c23", help="DeepfakeBench JSON: the compression level of "
                                    "FaceForensics++-style datasets."),
    root: Optional[Path] = typer.Option(None, help="DeepfakeBench JSON: where relative frame paths start "
                                        "(default: the JSON's folder, then its parents)."),
    crops: bool = typer.Option(False, "--crops", help="The frames are face crops already (DeepfakeBench's are): "
                               "skip the face search."),
    ray: bool = typer.Option(False, "--ray", help="Score on a Ray cluster (RAY_ADDRESS, else a local Ray), "
                             "64 frames a task; the frames must be readable where the tasks run."),
    as_json: bool = JSON,
) -> None:
    """DeepfakeBench's metrics of a shipped detector on a team's own data: frame AUC, video AUC (mean score per
    video), EER, AP and ACC, over all frames, per forgery method and per dataset."""
    from effigy.detect.deepfake.datasets import dataset_report, read_dataset, score_frames
    from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector, score_frames_on_ray

    check_deepfake_model(model, False)
    frames = read_dataset(data, split, compression, root)
    detector = load_detector(model, DEEPFAKE_TASK)
    loaded, threshold = detector.model, detector.operating_threshold(threshold)
    if ray:
        from effigy.cluster import import_ray

        import_ray()
    with progress(not as_json) as reporter:
        advance = reporter(f"scoring {len(frames)} frames" + (" on Ray" if ray else ""), -(-len(frames) // 64))
        scores = (score_frames_on_ray(model, frames, crops, advance) if ray
                  else score_frames(loaded, frames, crops, advance=advance))
    report = {"model": model, "data": str(data), "split": split, **dataset_report(frames, scores, threshold)}
    if as_json:
        echo_json(report)
        return
    rows = [{"group": "all", **report["all"]}, *[{"group": f"method {m}", **r} for m, r in report["methods"].items()],
            *[{"group": f"dataset {d}", **r} for d, r in report["datasets"].items()]]
    print_rows(rows, [("group", "frames of"), ("frames", "frames"), ("frame_auc", "frame AUC"),
                      ("video_auc", "video AUC"), ("eer", "EER"), ("ap", "AP"), ("acc", f"ACC at {threshold:g}")],
               f"{model} on {data} ({split}; {report['no_face_found']} frames without a face left out)")


@deepfake_app.command("export")
def deepfake_export(
    model: str = DEEPFAKE_MODEL,
    onnx: Path = ONNX_OUT,
    as_json: bool = JSON,
) -> None:
    """The detector as ONNX (face crops [N, 3, 64, 64] in, P(fake) out) for Triton / OpenVINO / ONNX Runtime,
    checked against PyTorch on 32 sample crops."""
    from effigy.detect.export import export_onnx, sample_crops
    from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector

    check_deepfake_model(model, False)
    _check_onnx_path(onnx)
    detector = load_detector(model, DEEPFAKE_TASK)
    record = export_onnx(detector.model, onnx, sample_crops(), {"model": model, "sha256": _model_sha256(model),
                                                                "score": "P(fake)",
                                                                "threshold": detector.operating_threshold()})
    _print_export(onnx, record, as_json)


def _check_onnx_path(path: Path) -> None:
    if path.suffix.lower() != ".onnx":
        raise EffigyError(f"--onnx {path}: give a file name ending in .onnx.")
    writable_file(path, "--onnx")


def _print_export(path: Path, record: dict, as_json: bool) -> None:
    if as_json:
        echo_json({"onnx": str(path), **record})
    else:
        console.print(f"wrote {path} and {path}.json ({record['score']}; largest difference from PyTorch "
                      f"{record['max_abs_difference']:.1e} on {record['checked_on']} crops)", soft_wrap=True)


def faces_of_files(paths: list[Path], crops: bool):
    """[(file, its faces)] for the image files among ``paths`` (folders expanded), each decoded by effigy's one
    decoder and searched for faces (:func:`effigy.detect.faces.find_faces`)."""
    from effigy.detect.faces import find_faces
    from effigy.images import read_image_file
    from effigy.worlds.faces import image_files

    return [(path, find_faces(read_image_file(path), crops)) for path in image_files(paths)]


def stacked_faces(found):
    """[F, 3, SIZE, SIZE] numpy array of every face in ``faces_of_files``'s answer, in order (none: F = 0)."""
    from effigy.detect.faces import stack_faces

    return stack_faces([face.image for _, file_faces in found for face in file_faces])


def _llm_answers(images) -> list[str]:
    from effigy.detect.deepfake.explain import load_explainer

    explainer, config = load_explainer()
    return explainer.answer(images, config.max_new_tokens)


def check_deepfake_model(model: str, explain: bool) -> None:
    """One clear error, before anything loads, for an unknown deepfake model or --explain on a model the LLM
    explainer does not read."""
    from effigy.detect.deepfake.zoo import SHIPPED
    from effigy.workflows.detectors import DEEPFAKE_TASK

    check_detector_model(model, DEEPFAKE_TASK)
    if explain and model != SHIPPED:
        raise EffigyError(f"--explain reads {SHIPPED}'s features; drop --model {model} or --explain.")


app.command("robustness", help="The same as `effigy bench robustness` (this spelling is kept one release).")(
    bench.bench_robustness)

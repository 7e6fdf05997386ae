"""``effigy serve``: the HTTP detection service (FastAPI + uvicorn), on localhost unless told otherwise."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effigy.cli._common import console, deprecated, finite, writable_folder


def serve(
    model: str = typer.Option("deepfake-authguard", help="deepfake-authguard, deepfake-ce or deepfake-clip."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, min=1, max=65535),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="P(fake) at which an image is called fake.",
                                    callback=finite),
    max_mb: float = typer.Option(5.0, min=0.01, max=100.0, help="Largest upload accepted, in MB.", callback=finite),
    out: Optional[Path] = typer.Option(None, help="Keep each upload in this folder (by default nothing is written)."),
    save_dir_alias: Optional[Path] = typer.Option(None, "--save-dir", hidden=True),
    explain: bool = typer.Option(False, "--explain", help="Answer with SmolLM2 through deepfake-explainer "
                                 "(deepfake-authguard only; ~1 s an image on 2 cores)."),
    crops: bool = typer.Option(False, "--crops", help="Uploads are face crops already: skip the face search."),
    no_docs: bool = typer.Option(False, "--no-docs", help="Leave out FastAPI's /docs and /redoc pages (they load "
                                 "their JavaScript from a CDN)."),
    client_timeout: float = typer.Option(10.0, min=0.1, max=600.0, callback=finite,
                                         help="Seconds a client has to send a request head (the body gets 3x)."),
) -> None:
    """Serve deepfake detection over HTTP: POST /detect (a photo in; each face found scored, JSON out) and an
    upload page at /."""
    from effigy.cli.detect import check_deepfake_model
    from effigy.serve.app import ServiceSettings, bind, create_app, run_service, url_of

    check_deepfake_model(model, explain)
    save_dir = deprecated(save_dir_alias, "--save-dir", "--out", out)
    if save_dir is not None:
        writable_folder(save_dir, "--out")
    settings = ServiceSettings(model=model, explain=explain, threshold=threshold, max_bytes=int(max_mb * 2**20),
                               save_dir=save_dir, header_timeout=client_timeout, body_timeout=3 * client_timeout,
                               crops=crops, docs=not no_docs)
    sock = bind(host, port)  # a busy port or a bad host is refused before anything loads or says "running"
    app = create_app(settings)
    console.print(f"effigy: {model} on {url_of(sock)} (POST /detect; Ctrl-C stops)", soft_wrap=True)
    run_service(app, settings, sock)

"""``effigy serve``: the HTTP detection service (FastAPI + uvicorn), on localhost unless told otherwise."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effigy.cli._common import console, deprecated, finite, writable_folder
from effigy.errors import EffigyError


def serve(
    model: str = typer.Option("deepfake-authguard", help="deepfake-authguard, deepfake-ce, deepfake-clip, or the "
                              "--out folder of `effigy detect deepfake train --data`."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, min=1, max=65535),
    threshold: Optional[float] = typer.Option(None, min=0.0, max=1.0, callback=finite, help="P(fake) at which "
                                              "a face is called fake (default: the model's stored threshold, "
                                              "else 0.5)."),
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
    workers: int = typer.Option(1, min=1, max=64, help="Threads decoding uploads and finding their faces (the model "
                                "runs in one batching thread that uses every core)."),
    max_batch: int = typer.Option(16, min=1, max=256, help="Most face crops scored in one model call."),
    max_wait_ms: float = typer.Option(10.0, min=0.0, max=1000.0, callback=finite, help="How long an upload waits "
                                      "for others to share its batch."),
    max_pending: int = typer.Option(16, min=1, max=4096, help="Uploads admitted at once; one more is answered 503."),
    request_timeout: float = typer.Option(30.0, min=0.1, max=600.0, callback=finite, help="Seconds from admission "
                                          "to answer; a later one is answered 503."),
    ray: bool = typer.Option(False, "--ray", help="Deploy on Ray Serve (the cluster RAY_ADDRESS names, else a local "
                             "Ray) behind Ray's HTTP proxy on --host:--port."),
    replicas: int = typer.Option(1, min=1, max=1024, help="With --ray: copies of the service (1 CPU each)."),
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
                               crops=crops, docs=not no_docs, workers=workers, max_batch=max_batch,
                               max_wait_s=max_wait_ms / 1000, max_pending=max_pending, request_timeout=request_timeout)
    if replicas != 1 and not ray:
        raise EffigyError("--replicas is the number of Ray Serve replicas: add --ray, or drop --replicas.")
    sock = bind(host, port)  # a busy port or a bad host is refused before anything loads or says "running"
    if ray:
        from effigy.cluster import import_ray

        import_ray()  # one clear line when Ray is not installed
        from effigy.serve.on_ray import serve_until_interrupted

        sock.close()  # Ray's proxy listens there instead
        serve_until_interrupted(settings, host, port, replicas, lambda url: console.print(
            f"effigy: {model} on Ray Serve, {replicas} replica(s), {url} (POST /detect; Ctrl-C stops)", soft_wrap=True))
        return
    app = create_app(settings)
    console.print(f"effigy: {model} on {url_of(sock)} (POST /detect; Ctrl-C stops)", soft_wrap=True)
    run_service(app, settings, sock)

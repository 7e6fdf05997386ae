"""``effigy serve --ray``: the same FastAPI app as ``effigy serve`` (:func:`effigy.serve.app.create_app`), deployed
on Ray Serve with N replicas behind Ray's HTTP proxy, for when one machine's cores are not enough.

Each replica builds the app itself at start (Ray Serve's ``__serve_build_asgi_app__``): the model is loaded in the
replica, never pickled from the driver, and each replica micro-batches its own uploads. Ray's proxy spreads
requests over the replicas. Where Ray runs is :mod:`effigy.cluster`'s rule: ``RAY_ADDRESS`` names a cluster,
otherwise a local instance is started. Bounds stay per replica (upload size, queue, timeouts); uvicorn's
header-timeout protocol is not Ray's proxy's, which has its own.
"""
from __future__ import annotations

import logging
import time

from ray import serve

from effigy.serve.app import ServiceSettings, create_app

log = logging.getLogger(__name__)
APP_NAME = "effigy"


@serve.ingress()
class DeepfakeService:
    """One replica: the service's settings, its app built in the replica."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings

    def __serve_build_asgi_app__(self):
        return create_app(self.settings)


def application(settings: ServiceSettings, replicas: int, cpus_per_replica: float = 1.0):
    """The bound Ray Serve application: ``replicas`` copies of the service, each reserving
    ``cpus_per_replica`` CPUs (Ray sizes its torch threads to them)."""
    deployment = serve.deployment(DeepfakeService, name="effigy-deepfake", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": cpus_per_replica})
    return deployment.bind(settings)


def deploy(settings: ServiceSettings, host: str, port: int, replicas: int) -> str:
    """Start Ray Serve's proxy on ``host``:``port`` and deploy the service; returns its URL once every replica
    has loaded its model (Ray must already be initialised)."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(application(settings, replicas), name=APP_NAME, route_prefix="/", blocking=False)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def serve_until_interrupted(settings: ServiceSettings, host: str, port: int, replicas: int, announce) -> None:
    """``effigy serve --ray``: deploy, say where, serve until Ctrl-C, then take the deployment down."""
    from effigy.cluster import ray_session

    with ray_session():
        url = deploy(settings, host, port, replicas)
        announce(url)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            log.info("stopping the Ray Serve deployment")
        finally:
            serve.shutdown()

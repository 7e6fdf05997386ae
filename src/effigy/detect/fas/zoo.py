"""The face anti-spoofing models of the zoo (declared in :data:`effigy.models.zoo.DECLARED`, built from here at
their first lookup: the zoo sits below this package): ``fas-protonet`` trained on every capture domain, one
``fas-protonet-without-<domain>`` per domain for the leave-one-domain-out protocol, and one
``fas-protonet-without-<attack>`` per attack for the leave-one-attack-out protocol."""
from __future__ import annotations

import torch

from effigy.detect.fas.model import FASConfig, build_model, train
from effigy.models.zoo import ZooEntry, config_variant
from effigy.worlds.faces import ATTACKS, DOMAINS

SHIPPED = "fas-protonet"


def without_domain(domain: str) -> str:
    """The zoo name of the model trained without ``domain`` (a capture domain or an attack: its held-out
    target)."""
    return f"{SHIPPED}-without-{domain}"


def entries() -> list[ZooEntry]:
    """The shipped model and one trained without each capture domain and each attack."""
    found = [ZooEntry(
        SHIPPED, "face anti-spoofing: small CNN + multi-centre live / spoof prototypes on the face world "
        "(all four capture domains, print / replay / mask attacks)", FASConfig, build_model, train, torch.float32)]
    variants = [(d, "", {"domains": [x for x in DOMAINS if x != d]},
                 f"the {d} capture domain (its leave-one-domain-out target)") for d in DOMAINS]
    variants += [(a, "Attack", {"attacks": [x for x in ATTACKS if x != a]},
                  f"{a} attacks (its leave-one-attack-out target)") for a in ATTACKS]
    for target, suffix, fields, what in variants:
        config = config_variant(FASConfig, f"FASConfigWithout{target.title()}{suffix}", **fields)
        found.append(ZooEntry(without_domain(target), f"{SHIPPED} trained without {what}", config, build_model, train,
                              torch.float32))
    return found

"""The face anti-spoofing models in the zoo, registered from here (the zoo sits below this package) when
``effigy.detect.fas`` is imported: ``fas-protonet`` trained on every capture domain, one
``fas-protonet-without-<domain>`` per domain for the leave-one-domain-out protocol, and one
``fas-protonet-without-<attack>`` per attack for the leave-one-attack-out protocol."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from effigy.detect.fas.model import FASConfig, build_model, train
from effigy.models.zoo import ZOO, ZooEntry
from effigy.worlds.faces import ATTACKS, DOMAINS

SHIPPED = "fas-protonet"


def without_domain(domain: str) -> str:
    """The zoo name of the model trained without ``domain`` (a capture domain or an attack: its held-out
    target)."""
    return f"{SHIPPED}-without-{domain}"


def _config_without(domain: str) -> type[FASConfig]:
    @dataclass
    class Config(FASConfig):
        domains: list[str] = field(default_factory=lambda: [d for d in DOMAINS if d != domain])
    Config.__name__ = Config.__qualname__ = f"FASConfigWithout{domain.title()}"
    return Config


def _config_without_attack(attack: str) -> type[FASConfig]:
    @dataclass
    class Config(FASConfig):
        attacks: list[str] = field(default_factory=lambda: [a for a in ATTACKS if a != attack])
    Config.__name__ = Config.__qualname__ = f"FASConfigWithout{attack.title()}Attack"
    return Config


def _register() -> None:
    if SHIPPED in ZOO:
        return
    ZOO.register(SHIPPED, ZooEntry(
        SHIPPED, "face anti-spoofing: small CNN + multi-centre live / spoof prototypes on the face world "
        "(all four capture domains, print / replay / mask attacks)", FASConfig, build_model, train, torch.float32))
    for domain in DOMAINS:
        ZOO.register(without_domain(domain), ZooEntry(
            without_domain(domain), f"{SHIPPED} trained without the {domain} capture domain (its "
            "leave-one-domain-out target)", _config_without(domain), build_model, train, torch.float32))
    for attack in ATTACKS:
        ZOO.register(without_domain(attack), ZooEntry(
            without_domain(attack), f"{SHIPPED} trained without {attack} attacks (its leave-one-attack-out "
            "target)", _config_without_attack(attack), build_model, train, torch.float32))


_register()

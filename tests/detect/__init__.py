from effigy.detect.fas.model import FASConfig, PrototypeFAS, train


def tiny_fas(domains: tuple[str, ...] = ("phone",), steps: int = 20) -> PrototypeFAS:
    """A face model small and short enough for a unit test (a few seconds), trained for real."""
    return train(FASConfig(domains=list(domains), width=8, embed_dim=16, centres=2, live_per_identity=1,
                           spoofs_per_attack=1, train_steps=steps, batch_size=16))

from effigy.detect.deepfake.captions import FACTS, KINDS, SHOTS, CaptionPools, faithful, noise_rate


def test_faithful_needs_region_and_artifact_for_fakes_and_no_alteration_for_reals():
    assert faithful("The mouth looks stretched against the face.", "reenact", "mouth")
    assert not faithful("The eyes look stretched.", "reenact", "mouth")  # wrong region
    assert not faithful("The mouth looks lovely.", "reenact", "mouth")  # no artifact
    assert faithful("A checkerboard pattern covers the face.", "upsample", "face")
    assert faithful("A natural photo, not manipulated and unaltered.", "real", "")
    assert not faithful("A photo with another person's mouth blended in.", "real", "")


def test_noise_rate_counts_unfaithful_captions_per_kind():
    pools = CaptionPools({("real", ""): ["A natural face.", "A blended face."],
                          ("swap", "face"): ["Another person's face with a seam.", "A face.", "A face swap.", "Eyes."]},
                         "hand-written")
    assert noise_rate(pools) == {"real": 0.5, "swap/face": 0.5, "all": 3 / 6}
    assert pools.caption("swap", "face", 5) == "A face."


def test_the_examples_and_facts_are_themselves_faithful():
    for (family, region) in KINDS:
        assert (family, region) in FACTS
    for facts, caption in SHOTS:
        kind = next(k for k in KINDS if FACTS[k] == facts)
        assert faithful(caption, *kind)

import numpy as np
import pytest
import torch

from effigy.detect.deepfake import data as deepfake_data
from effigy.detect.deepfake import explain
from effigy.detect.deepfake.captions import KINDS, faithful
from effigy.worlds.deepfakes import render_forgeries


def test_every_kind_has_an_answer_that_names_its_truth_and_its_verdict():
    for family, region in KINDS:
        answer = explain.answer_for(family, region)
        assert explain.verdict_of(answer) == ("real" if family == "real" else "fake")
        assert faithful(answer, family, region)
    assert not faithful(explain.answer_for("reenact", "mouth"), "reenact", "eyes")  # the region tells them apart
    for family, region in KINDS:  # and no family's answer counts as naming another family
        others = [kind for kind in KINDS if kind[0] not in (family, "real")]
        assert not any(faithful(explain.answer_for(family, region), *other) for other in others)
    assert explain.verdict_of("Fake, clearly.") == "fake" and explain.verdict_of("Maybe.") == "unclear"
    assert explain.verdict_of("") == "unclear"


def test_the_projector_trains_through_the_frozen_llm_and_answers(monkeypatch):
    small = render_forgeries("dev", ["sbi", "swap"], ["phone"], 1, 1)
    monkeypatch.setattr(deepfake_data, "training_images", lambda config: small)
    config = explain.ExplainerConfig(examples=16, train_steps=2, batch_size=2)
    projector = explain.train(config)
    encoder, llm, tokenizer = explain.load_parts(config.encoder)
    own = {id(p) for p in projector.parameters()}
    trained = [p for p in llm.parameters() if p.requires_grad]
    assert trained and all(id(p) in own for p in trained)  # the LLM trains only the LoRA it borrows
    assert not any(p.requires_grad for p in encoder.parameters())
    assert any(p.abs().sum() > 0 for name, p in projector.lora.items() if "lora_B" in name)  # and the LoRA moved
    explainer = explain.Explainer(projector, encoder, llm, tokenizer)
    visual = explain.visual_tokens(encoder, small.images[:3])
    assert visual.tokens.shape == (3, explain.VISUAL_TOKENS - 1, 1280) and visual.logit.shape == (3,)
    with torch.no_grad():  # the last token carries the encoder's own reading
        torch.testing.assert_close(visual.logit, encoder.logit(torch.from_numpy(small.images[:3])), atol=1e-4, rtol=1e-4)
    embeds = explainer.prompt_embeddings(visual)
    assert embeds.shape[0] == 3 and embeds.shape[2] == explain.LLM_HIDDEN
    loss = explain._answer_batch(explainer, visual[:2], [explain.answer_for("real", ""), explain.answer_for("sbi", "face")])
    assert torch.isfinite(loss) and loss > 0
    answers = explainer.answer(small.images[:2], max_new_tokens=6)
    assert len(answers) == 2 and all(explain.verdict_of(a) in ("real", "fake") for a in answers)  # always a verdict
    assert projector(visual).shape == (3, explain.VISUAL_TOKENS, explain.LLM_HIDDEN)
    assert np.isfinite(projector(visual).detach().numpy()).all()


def test_prompt_keeps_the_image_between_system_user_text_and_the_assistant_turn():
    class Template:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}</>" for m in messages) + "<assistant>"

    before, after = explain._prompt_pieces(Template())
    assert before.endswith("<user>") and after.startswith(" " + explain.QUESTION) and after.endswith("<assistant>")
    with pytest.raises(KeyError):
        explain.answer_for("morph", "face")


def test_lora_starts_as_the_shipped_llm_trains_and_switches_off():
    encoder, llm, tokenizer = explain.load_parts("deepfake-authguard")
    ids = torch.tensor([tokenizer("Is this face real?")["input_ids"]])
    with torch.no_grad():
        plain = explain.Explainer(explain.VisualProjector(explain.ExplainerConfig(lora_rank=0)), encoder, llm, tokenizer)
        before = llm(ids).logits
        projector = explain.VisualProjector(explain.ExplainerConfig(lora_rank=4))
        explain.Explainer(projector, encoder, llm, tokenizer)
        torch.testing.assert_close(llm(ids).logits, before)  # B starts at zero: the LLM as shipped
        b = next(p for name, p in projector.lora.items() if "lora_B" in name)
        b.fill_(0.05)
        assert (llm(ids).logits - before).abs().max() > 1e-3  # the LLM reads the projector's own matrices
        explain.Explainer(plain.projector, encoder, llm, tokenizer)
        torch.testing.assert_close(llm(ids).logits, before)  # a projector without LoRA switches it off
    assert len(projector.state_dict()) == len(explain.VisualProjector(explain.ExplainerConfig(lora_rank=0)).state_dict()) \
        + 2 * len(explain.LORA_TARGETS) * explain.LLM_LAYERS  # one file holds the projector and the LoRA

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
    assert explain.verdict_of("Fake, clearly.") == "fake" and explain.verdict_of("Maybe.") == "unclear"
    assert explain.verdict_of("") == "unclear"


def test_the_projector_trains_through_the_frozen_llm_and_answers(monkeypatch):
    small = render_forgeries("dev", ["sbi", "swap"], ["phone"], 1, 1)
    monkeypatch.setattr(deepfake_data, "training_images", lambda config: small)
    config = explain.ExplainerConfig(examples=16, train_steps=2, batch_size=2)
    projector = explain.train(config)
    encoder, llm, tokenizer = explain.load_parts(config.encoder)
    assert not any(p.requires_grad for p in llm.parameters()) and not any(p.requires_grad for p in encoder.parameters())
    explainer = explain.Explainer(projector, encoder, llm, tokenizer)
    visual = explain.visual_tokens(encoder, small.images[:3])
    assert visual.shape == (3, explain.VISUAL_TOKENS, 1280)
    embeds = explainer.prompt_embeddings(visual)
    assert embeds.shape[0] == 3 and embeds.shape[2] == explain.LLM_HIDDEN
    loss = explain._answer_batch(explainer, visual[:2], [explain.answer_for("real", ""), explain.answer_for("sbi", "face")])
    assert torch.isfinite(loss) and loss > 0
    answers = explainer.answer(small.images[:2], max_new_tokens=6)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert np.isfinite(projector(visual).detach().numpy()).all()


def test_prompt_keeps_the_image_between_system_user_text_and_the_assistant_turn():
    class Template:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "".join(f"<{m['role']}>{m['content']}</>" for m in messages) + "<assistant>"

    before, after = explain._prompt_pieces(Template())
    assert before.endswith("<user>") and after.startswith(" " + explain.QUESTION) and after.endswith("<assistant>")
    with pytest.raises(KeyError):
        explain.answer_for("morph", "face")

"""Planted latents whose truth is known, scored end to end by the real local models: the right explanation
must beat an unrelated one, and the random-explanation baseline must sit near chance."""

import numpy as np
import pandas as pd
import pytest
from test_embedding import DIGITS, PROSE, planted, window

from interpflow.baselines import explain_random
from interpflow.scoring.embedding import DEFAULT_EMBEDDER, load_embedder
from interpflow.scoring.embedding import score_latents as embedding_scores
from interpflow.scoring.judge import score_latents as judge_scores

THEMES = {
    "digits and numbers": DIGITS[:6],
    "animals such as dogs, cats, horses and birds": [
        "The horse galloped past the cows while two dogs barked at the geese.",
        "A cat watched the sparrows and pigeons from the fence.",
        "Wolves and bears roam the forest where deer and rabbits hide.",
        "The zoo keeps lions, tigers, elephants and a family of monkeys.",
        "Our puppy chased the ducks until the goat butted it away.",
        "Owls hunt mice and voles, while foxes prefer hens and rabbits.",
    ],
    "colours like red, green, blue and yellow": [
        "The red door stood between a green wall and a yellow window frame.",
        "She wore a blue scarf, purple gloves and an orange coat.",
        "Paint the fence white, the shed grey and the bench dark brown.",
        "Crimson and scarlet leaves fell on the golden and amber grass.",
        "His shirt was pink, his tie turquoise and his shoes black.",
        "The flag is red, white and blue with a small green star.",
    ],
    "cooking, recipes and food": [
        "Whisk the eggs with sugar, fold in the flour and bake for an hour.",
        "Fry the onions in butter, add garlic, tomatoes and a pinch of salt.",
        "Simmer the soup with carrots, potatoes and fresh parsley.",
        "Knead the dough, let it rise, then bake the bread until golden.",
        "Season the chicken with pepper and roast it with lemon and thyme.",
        "Serve the pasta with grated cheese, olive oil and basil.",
    ],
}


def themed() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four latents, each firing on one theme's windows; the negatives are the same neutral prose for all."""
    rows = []
    for latent, texts in enumerate(THEMES.values()):
        rows += [window(latent, i, t, True) for i, t in enumerate(texts)]
        rows += [window(latent, 100 + i, t, False) for i, t in enumerate(PROSE[:6])]
    explanations = pd.DataFrame({"latent": range(len(THEMES)), "explanation": list(THEMES), "status": "ok"})
    return pd.DataFrame(rows), explanations


def test_random_baseline_sits_near_chance_where_the_right_explanation_wins():
    examples, right = themed()
    random = explain_random(right.assign(error="", completion=""), {"seed": 0})
    assert (random["explanation"].to_numpy() != right["explanation"].to_numpy()).all()
    cfg = {"kind": "embedding", "seed": 0, "name": "embedding"}
    model = load_embedder(DEFAULT_EMBEDDER, "cpu")
    _, right_scores = embedding_scores(examples, right, cfg, model)
    _, random_scores = embedding_scores(examples, random, cfg, model)
    assert right_scores["score"].mean() > 0.9
    assert 0.25 <= random_scores["score"].mean() <= 0.75
    assert right_scores["score"].mean() - random_scores["score"].mean() > 0.3


@pytest.mark.slow
def test_local_judge_prefers_the_right_explanation(qwen_gguf):
    from interpflow.llm.client import LLMClient

    examples, explanations = planted()
    keep = examples["example_id"].isin([0, 1, 2, 3, 4, 100, 101, 102, 103, 104])
    cfg = {"kind": "detection", "examples_per_prompt": 1, "seed": 0, "name": "detection"}
    llm = dict(model="local/qwen2.5-coder-1.5b-instruct", max_tokens=10, logprobs=True)
    with LLMClient(local_gguf=qwen_gguf, **llm) as client:
        predictions, metrics = judge_scores(examples[keep], explanations, cfg, client)
    by = metrics.set_index("latent")
    assert by.loc[0, "n"] == 10 and by.loc[0, "n_failed"] == 0
    # the small judge's yes/no threshold drifts, so its P(yes) ranking (AUROC) is the reliable signal
    assert by.loc[0, "auroc"] > 0.75 and by.loc[0, "auroc"] - by.loc[1, "auroc"] > 0.2
    assert by.loc[2, "status"] == "no_explanation: parse_error"
    assert np.isfinite(predictions.loc[predictions["latent"] == 0, "p_yes"]).all()

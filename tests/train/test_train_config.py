"""Config files and --set overrides; every shipped config loads and validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import yaml

from tests.train.conftest import TRAINING_CONFIGS
from vestis.errors import VestisError
from vestis.train.config import RUN_KINDS, AttributeRunConfig, JointRunConfig, RunConfig, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def test_overrides_are_parsed_as_yaml_and_typed(garment_config):
    cfg = load_config(garment_config, ["head.kind=ce+triplet", "train.lr=3e-4", "head.dim=128",
                                       "data.labels=[articleType]", "head.margin=0.4", "train.resume=",
                                       "head.classifier=cosine"])
    assert cfg.head.kind == "ce+triplet" and cfg.head.dim == 128 and cfg.head.margin == 0.4
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.labels == ["articleType"] and cfg.train.resume is None
    assert cfg.train.epochs == 4  # from the file
    assert cfg.finetune.backbone_lr == pytest.approx(1e-5)  # a default


@pytest.mark.parametrize("override, message", [
    ("head.knd=arcface", "unknown config key head.knd"),
    ("trian.lr=0.1", "unknown config key trian"),
    ("head.kind=softmax", "head.kind: 'softmax' is not one of"),
    ("head.classifier=mlp", "head.classifier: 'mlp' is not one of"),
    ("head.margin=-0.1", "head.margin=-0.1"),
    ("head.class_sampling=rare", "head.class_sampling: 'rare' is not one of"),
    ("head.class_sampling=by-size", "only the triplet kinds use; head.kind is arcface"),
    ("train.epochs=many", "train.epochs: expected int"),
    ("train.lr=fast", "train.lr: expected float"),
    ("head", "key=value"),
    ("data.labels=[]", "at least one"),
    ("data.source=shop.zip", "exactly one of"),
    ("train.average_from=5", "train.average_from is the epoch"),  # after the last of 4 epochs
    ("train.average_from=-1", "train.average_from is the epoch"),
])
def test_bad_settings_are_refused_with_the_key(garment_config, override, message):
    with pytest.raises(VestisError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(garment_config, [override])


@pytest.mark.parametrize("kind", ["ce", "ce+triplet", "triplet"])
def test_a_margin_no_loss_uses_is_refused(garment_config, kind):
    """The linear classifier and the triplet loss have no class margin; a margin set there would be ignored."""
    with pytest.raises(VestisError, match=r"head.margin=0.2: .*head.kind is " + re.escape(kind)):
        load_config(garment_config, [f"head.kind={kind}", "head.margin=0.2"])
    if kind != "triplet":
        for classifier in ("cosine", "subcenter-arcface"):
            assert load_config(garment_config,
                               [f"head.kind={kind}", "head.margin=0.2", f"head.classifier={classifier}"])


def test_name_defaults_to_the_file_name(tmp_path):
    path = tmp_path / "my-experiment.yaml"
    path.write_text("kind: embedding\ndata:\n  collection: somewhere\n")
    cfg = load_config(path)
    assert cfg.name == "my-experiment" and cfg.run_dir == Path("runs/my-experiment")


def test_shipped_configs_are_valid_and_declare_their_kind():
    classes = {"embedding": RunConfig, "finetune": RunConfig, "attributes": AttributeRunConfig,
               "joint": JointRunConfig}
    kinds = set()
    for path in TRAINING_CONFIGS:
        assert "kind" in yaml.safe_load(path.read_text()), path
        cfg = load_config(path)
        assert type(cfg) is classes[cfg.kind] and cfg.name == path.stem, path
        kinds.add((cfg.kind, cfg.stage, cfg.head.kind))
    assert {k for k, _, _ in kinds} == set(RUN_KINDS)
    assert {("embedding", 1, "arcface"), ("embedding", 1, "ce+triplet"), ("finetune", 2, "subcenter-arcface")} <= kinds


def _config_file(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text + "data:\n  collection: somewhere\n")
    return path


@pytest.mark.parametrize("text, message", [
    ("", r"no `kind:`; a config declares what it trains, one of: embedding \(an embedding head .*, stage 1\); "
              r"finetune \(.*\); attributes \(.*\); joint \(.*\)$"),
    ("kind: heads\n", r"kind 'heads' is not one of: embedding"),
    ("stage: 2\n", r"say what the run trains with `kind:` instead of `stage:` \(stage 1 is `kind: embedding`, "
                   r"stage 2 `kind: finetune`\)"),
])
def test_a_config_without_a_known_kind_is_refused_with_the_kinds(tmp_path, text, message):
    path = _config_file(tmp_path, text)
    with pytest.raises(VestisError, match=re.escape(str(path)) + ": " + message):
        load_config(path)


def test_each_kind_has_its_own_sections(tmp_path):
    """A section another kind reads is refused, not ignored: the finetune section outside kind
    finetune, ``model`` outside kind attributes, ``text`` outside kind joint."""
    path = _config_file(tmp_path, "kind: embedding\n")
    with pytest.raises(VestisError, match="the finetune section sets up fine-tuning .*kind: embedding"):
        load_config(path, ["finetune.backbone_lr=1e-4"])
    assert load_config(path, ["kind=finetune", "finetune.backbone_lr=1e-4"]).stage == 2
    for section in ("model.attributes=[colour]", "text.column=title"):
        with pytest.raises(VestisError, match="unknown config key " + section.split(".")[0]):
            load_config(path, [section])


def test_transfer_sets_are_parsed_from_the_file_and_overrides(garment_config):
    cfg = load_config(garment_config, [
        "transfer=[{collection: runs/collections/clothing-attributes, label: category},"
        " {collection: elsewhere/fmnist, label: label, name: fashion-mnist, required: true}]"])
    first, second = cfg.transfer
    assert (first.collection, first.label, first.title, first.required) == (
        "runs/collections/clothing-attributes", "category", "clothing-attributes", False)
    assert (second.title, second.required) == ("fashion-mnist", True)
    assert load_config(garment_config, ["transfer=[]"]).transfer == []
    assert load_config(garment_config).transfer == []


@pytest.mark.parametrize("override, message", [
    ("transfer=[{collection: a}]", "transfer[0]: a transfer set names a `collection` and the `label`"),
    ("transfer=[{collection: a, label: x, colour: red}]", "unknown config key transfer[0].colour"),
    ("transfer=[{collection: a/x, label: y}, {collection: b/x, label: y}]", "two sets are called the same"),
    ("transfer={collection: a, label: y}", "transfer: expected a list"),
    ("transfer=[{collection: a, label: y, required: maybe}]", "transfer[0].required: expected bool"),
])
def test_bad_transfer_sets_are_refused(garment_config, override, message):
    with pytest.raises(VestisError, match=message.replace("[", r"\[").replace("]", r"\]").replace("`", ".")):
        load_config(garment_config, [override])


def test_shipped_fashion_product_configs_name_their_transfer_sets():
    for name in ("fashion-product-arcface", "fashion-product-triplet", "fashion-product-finetune"):
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        sets = {t.title: (Path(t.collection).name, t.label, t.required) for t in cfg.transfer}
        assert sets == {"clothing-attributes": ("clothing-attributes", "category", False),
                        "fashion-mnist": ("fashion-mnist-5000", "label", False)}, name

import re

import pytest
import yaml

from mdrec.config import (
    AmazonSourceConfig,
    Role,
    TableSourceConfig,
    WorldSourceConfig,
    apply_overrides,
    dump_config,
    load_config,
)
from mdrec.errors import ConfigError


def write(tmp_path, obj, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(obj) if not isinstance(obj, str) else obj)
    return p


def test_repo_configs_load(in_repo_root):
    cfg = load_config("configs/amazon-food-kitchen.yaml")
    assert isinstance(cfg.data.source, TableSourceConfig)
    assert cfg.data.domains == ["Food", "Kitchen"]
    assert cfg.data.source.interactions == "../shared/data/amazon-food-kitchen/interactions.parquet"
    demo = load_config("configs/demo.yaml")
    assert isinstance(demo.data.source, WorldSourceConfig)
    assert [d.name for d in demo.data.source.domains] == ["Books", "Movies", "Music"]
    thin = load_config("configs/world-thin.yaml")  # the sweep where synthetic rows help
    assert set(thin.sweep.backends) == {"cooccurrence", "semantic", "oracle"}
    assert thin.generate.backend.type == "semantic" and thin.prepare.cold_start.fraction == 0.8


def test_overrides_keep_yaml_types(tmp_path):
    p = write(tmp_path, {"data": {"source": {"type": "world"}}})
    cfg = load_config(p, ["prepare.kcore=5", "prepare.roles={Books: cold}", "seed=7", "data.domains=[Books]"])
    assert cfg.prepare.kcore == 5 and cfg.seed == 7
    assert cfg.prepare.roles == {"Books": Role.cold}
    assert cfg.data.domains == ["Books"]


def test_override_can_switch_source_type(tmp_path):
    p = write(tmp_path, {"data": {"source": {"type": "world"}}})
    cfg = load_config(p, ["data.source={type: amazon, domains: {A: {reviews: r.json, metadata: m.json}}}"])
    assert isinstance(cfg.data.source, AmazonSourceConfig)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["prepare.kcor=5"], "unknown key 'prepare.kcor'"),
        (["prepare.kcore=abc"], "'prepare.kcore'"),
        (["prepare.kcore=-1"], "'prepare.kcore'"),
        (["data.source.userz=5"], "unknown key 'data.source.userz'"),
        (["nonsense"], "expected KEY=VALUE"),
        (["data.source.type.x=1"], "data.source.type is a value, not a section"),
        (["prepare.cold_start.fraction=1.5"], "'prepare.cold_start.fraction'"),
        (["train.early_stopping.metric=logloss"], "'train.early_stopping.metric': Value error, must be one of auc"),
        (["train.modelz=[]"], "unknown key 'train.modelz'"),
        (["ray.cpu_label_selector={mdrec node: cpu}"], "'ray.cpu_label_selector': Value error, label key 'mdrec node'"),
        (["train.label_selector={mdrec-node: -gpu}"], "label value '-gpu' of 'mdrec-node'"),
        (["generate.backend.label_selector={gpu: in()}"], "'generate.backend.label_selector': Value error, label value 'in()' of 'gpu'"),
        (["generate.backend={type: vllm, model: m, tensor_parallel_size: 2, label_selector: {mdrec-node: gpu}}"],
         "label_selector needs tensor_parallel_size 1"),
        (["generate.backend={type: oracle}"], "set generate.backend.allow_oracle: true"),
        (["generate.backend={type: vllm, model: m, popularity_prior: 0.1}"], "popularity_prior needs mode: score"),
        (["generate.backend={type: popularity, popularity_prior: 0.1}"], "unknown key 'generate.backend.popularity_prior'"),
        (["train.models=[{name: star, train: {lr: 0}}]"], "'train.models.0.train.lr'"),
        (["train.models=[{name: star, train: {momentum: 0.9}}]"], "train.models.0.train.momentum"),
        (["train.weight_decay=-1"], "'train.weight_decay'"),
        # the model registry and each model's parameters are checked when the config loads
        (["train.models=[{name: bogusmodel}]"], "'train.models.0': Value error, unknown model 'bogusmodel' (known: "),
        (["train.models=[{name: sasrec, params: {bogus: 1}}]"], "model 'sasrec': unknown key 'bogus'"),
        (["train.models=[{name: star, params: {dropout: 2}}]"], "model 'star'"),
    ],
)
def test_bad_keys_and_values_name_the_key(tmp_path, overrides, message):
    p = write(tmp_path, {"data": {"source": {"type": "world"}}})
    with pytest.raises(ConfigError) as err:
        load_config(p, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    p = write(tmp_path, {"data": {"source": {"type": "world", "users": 10}}, "prepar": {}})
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key 'prepar'"):
        load_config(p)


def test_wrong_type_in_file(tmp_path):
    p = write(tmp_path, {"data": {"source": {"type": "world", "users": "many"}}})
    with pytest.raises(ConfigError, match=r"'data\.source\.users'.*'many'"):
        load_config(p)


def test_unknown_source_type(tmp_path):
    p = write(tmp_path, {"data": {"source": {"type": "hive"}}})
    with pytest.raises(ConfigError, match="data.source"):
        load_config(p)


def test_table_source_needs_exactly_one_time_column(tmp_path):
    src = {"type": "table", "interactions": "i.csv", "items": "t.csv",
           "interaction_columns": {"timestamp": "t", "seq": "s"}}
    with pytest.raises(ConfigError, match="exactly one of 'timestamp' or 'seq'"):
        load_config(write(tmp_path, {"data": {"source": src}}))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1, 2"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_dump_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, {"data": {"source": {"type": "world", "users": 10}}}), ["prepare.kcore=2"])
    again = load_config(write(tmp_path, dump_config(cfg), "again.yaml"))
    assert again == cfg


def test_apply_overrides_creates_sections():
    assert apply_overrides({}, ["a.b.c=1"]) == {"a": {"b": {"c": 1}}}


def test_a_models_own_training_settings_go_over_trains(tmp_path):
    from mdrec.config import training_of

    cfg = load_config(write(tmp_path, {"data": {"source": {"type": "world"}},
                                       "train": {"lr": 0.002, "weight_decay": 0.1, "epochs": 3,
                                                 "models": [{"name": "star", "train": {"lr": 0.01, "epochs": 5}},
                                                            {"name": "sasrec"}]}}))
    star, sasrec = (training_of(cfg.train, spec) for spec in cfg.train.models)
    assert (star.lr, star.epochs, star.weight_decay) == (0.01, 5, 0.1)
    assert (sasrec.lr, sasrec.epochs, sasrec.weight_decay) == (0.002, 3, 0.1)
    assert cfg.train.lr == 0.002  # train's own settings are untouched


def test_synthetic_modes_name_the_grid_arms(tmp_path):
    from mdrec.experiment import arms, grid

    cfg = load_config(write(tmp_path, {"data": {"source": {"type": "world"}}, "train": {
        "variants": ["real", "raw", "filtered"], "protocols": ["cold_start"],
        "synthetic": {"modes": [{"name": "label", "params": {"weight": 0.5}}, {"name": "context"},
                                {"name": "pretrain", "params": {"epochs": 1}, "tag": "pre1"}]}}}))
    assert [a.name for a in arms(cfg)] == ["real", "raw", "raw+context", "raw+pre1",
                                           "filtered", "filtered+context", "filtered+pre1"]
    assert {k.variant for k in grid(cfg)} == {a.name for a in arms(cfg)}  # real trains once, not per mode


@pytest.mark.parametrize("synthetic, message", [
    ({"modes": [{"name": "soft-labels"}]}, "unknown synthetic training mode 'soft-labels' (known: label, context, pretrain, pairwise, soft)"),
    ({"modes": [{"name": "label", "params": {"weight": 0}}]}, "mode 'label': params.weight"),
    ({"modes": [{"name": "context", "params": {"weight": 1}}]}, "mode 'context': params.weight: Extra inputs"),
    ({"modes": [{"name": "label"}, {"name": "label", "params": {"weight": 2}}]}, "appears twice: give each a distinct tag"),
    ({"modes": []}, "train.synthetic.modes"),
])
def test_bad_synthetic_modes_are_one_line_errors(tmp_path, synthetic, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, {"data": {"source": {"type": "world"}}, "train": {"synthetic": synthetic}}))


def test_the_old_synthetic_weight_says_where_it_went(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("synthetic_weight moved: write synthetic: {modes: [{name: label, "
                                                    "params: {weight: 0.5}}]}")):
        load_config(write(tmp_path, {"data": {"source": {"type": "world"}}, "train": {"synthetic_weight": 0.5}}))

"""The search space of each method: which options are searched with which choices, the trials every study starts
with, and that every configuration drawn is a valid `mwa train` configuration."""

from __future__ import annotations

import optuna
import pytest

from mwa_cli.adapters.registry import resolve_options
from mwa_cli.train.config import TrainConfig
from mwa_cli.tune.space import batch_choices, build_space, describe, top_choices

FIXED = {"backbone": "beit3-mini", "device": "cpu", "extend_vocab": "off"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tests.helpers.data_dir import make_train_data_dir

    return make_train_data_dir(tmp_path_factory.mktemp("space_data"), n_images=40, size=64)


def test_top_k_choices_span_a_quarter_to_three_quarters_of_the_depth():
    assert top_choices(4) == ("all", "top-1", "top-2", "top-3")
    assert top_choices(24) == ("all", "top-6", "top-8", "top-12", "top-16", "top-18")
    assert top_choices(1) == ("all",)


def test_batch_choices_halve_and_double_the_default_within_the_pairs():
    assert batch_choices(32, 1000) == (32, 16, 64)
    assert batch_choices(32, 40) == (32, 16, 40)
    assert batch_choices(32, 10) == (10,)


def test_mwa_on_beit3_mini_searches_layers_cache_rank_ae_width_lr_and_batch(data):
    space = build_space("mwa", FIXED, data)
    assert space.layers == ("all", "top-1", "top-2", "top-3") and space.cache and space.depth == 4
    assert space.ranks == ("auto", 8, 32)  # auto is 16 at width 192
    assert space.ae_widths == ("auto", 48, 16)  # 48: auto's width with all 4 layers adapted
    assert space.lr_default == 2e-2 and space.lr_range == pytest.approx((5e-3, 8e-2))
    assert space.batch_default == 32 and space.layer_decays == ()
    first, fast = space.first_params()
    assert first == {"lr": 2e-2, "batch_size": 32, "layers": "all", "rank": "auto", "ae_width": "auto"}
    assert fast == dict(first, layers="top-2", feature_cache="auto")
    assert describe(fast) == "top-2 cache lr 2.0e-2 b32"


def test_full_ft_searches_the_rate_layer_decay_and_batch_only(data):
    space = build_space("full-ft", FIXED, data)
    assert (space.layers, space.ranks, space.ae_widths, space.cache) == ((), (), (), False)
    assert space.layer_decays == (0.65, 0.75, 0.85) and space.lr_default == 3e-3
    assert space.first_params() == [{"lr": 3e-3, "batch_size": 32, "layer_decay": 0.65}]


def test_no_feature_cache_when_the_trials_extend_the_vocabulary(data):
    # the data's Japanese captions are mostly <unk> for beit3-mini's tokenizer: auto extends the vocabulary, whose
    # new embeddings train below every layer, so no layer can be cached
    space = build_space("mwa", dict(FIXED, extend_vocab="auto"), data)
    assert space.layers == ("all", "top-1", "top-2", "top-3") and not space.cache
    assert all("feature_cache" not in p for p in space.first_params())


def test_lora_searches_its_own_integer_rank(data):
    assert build_space("lora", FIXED, data).ranks == (8, 4, 16)


@pytest.mark.parametrize("method", ["mwa", "nke", "lora", "full-ft"])
def test_every_drawn_configuration_is_a_valid_train_config(data, method):
    space = build_space(method, FIXED, data)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen_cache = False
    for _ in range(25):
        trial = study.ask()
        params = space.suggest(trial)
        values = space.train_values(params)
        cfg = TrainConfig(data_dir=str(data), **FIXED, **values).validate()
        resolve_options(method, cfg.method_options)
        assert space.lr_range[0] <= cfg.lr <= space.lr_range[1]
        assert cfg.feature_cache in ("off", "auto")
        if cfg.feature_cache == "auto":
            seen_cache = True
            assert params["layers"] != "all"  # the cache needs frozen layers below the adapters
        study.tell(trial, 0.0)
    assert seen_cache == (method != "full-ft")

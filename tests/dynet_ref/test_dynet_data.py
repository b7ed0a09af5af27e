"""The training data stream: progressive phases, rank slicing, sequential curriculum, determinism, config layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dynet_ref.config import ConfigError, StageConfig, TrainConfig, apply_sets, apply_yaml, with_crop
from dynet_ref.data import PairDataset, PretrainDataset, StepSampler, Stream
from dynet_ref.index import read_pairs, read_patches
from dynet_ref.loop import lr_at, variant_at
from tests.dynet_ref.train_store import build_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    return build_store(tmp_path_factory.mktemp("data") / "s", n_patches=5, n_pairs=3,
                       tasks=("denoise", "derain", "dehaze"))


def test_progressive_phases_cover_every_position_once() -> None:
    cfg = StageConfig(steps=None, epochs=4.0, crop=32, batch_size=4, progressive=((1.0, 48, 2), (2.5, 64, 8)))
    stream = Stream(cfg, epoch_size=10)
    positions, crops = [], set()
    for step in range(stream.steps_for(4.0)):
        ph = stream.phase(step)
        positions += range(stream.position(step), stream.position(step) + ph.batch)
        crops.add((ph.crop, ph.batch))
    assert positions == list(range(len(positions))) and len(positions) >= 40
    assert crops == {(32, 4), (48, 2), (64, 8)}
    assert stream.phase(stream.steps_for(1.0)).crop == 48  # the crop changes at the first step of epoch 1
    assert stream.steps_for(1.0) == 3  # ceil(10 / 4)


def test_ranks_split_the_global_batch_exactly() -> None:
    stream = Stream(StageConfig(batch_size=6), epoch_size=7)
    one = list(StepSampler(stream, 2, 5))
    halves = [list(StepSampler(stream, 2, 5, rank=r, world=2)) for r in range(2)]
    for step, batch in enumerate(one):
        assert batch == halves[0][step] + halves[1][step]
    with pytest.raises(ValueError, match="divisible"):
        list(StepSampler(stream, 0, 1, world=4))


def test_sequential_curriculum_only_draws_the_first_k_tasks(store) -> None:
    cfg = StageConfig(steps=30, batch_size=2, crop=32, mix="sequential", tasks=("dehaze", "derain", "denoise"),
                      repeat=())
    rows = read_pairs([store], "train", cfg.tasks)
    data = PairDataset(rows, 0, cfg)
    sampler = StepSampler(Stream(cfg, data.n_items), 0, 30, n_stages=3, total=30)
    seen: dict[int, set[str]] = {}
    for batch in sampler:
        for position, _, stage in batch:
            _, item = data.locate(position, data.sizes[stage], stage)
            seen.setdefault(stage, set()).add(rows[data.items[item][0]].task)
    assert seen[0] == {"dehaze"} and seen[1] == {"dehaze", "derain"} and seen[2] == {"dehaze", "derain", "denoise"}


def test_samples_are_pure_functions_of_the_index(store) -> None:
    cfg = TrainConfig()
    patches = read_patches([store])
    a = PretrainDataset(patches, 3, with_crop(cfg.corruption, 32))
    b = PretrainDataset(patches, 3, with_crop(cfg.corruption, 32))
    x1, y1 = a[(7, 32, 0)]
    assert x1.shape == (3, 32, 32) and not torch.equal(x1, y1)
    assert all(torch.equal(u, v) for u, v in zip(b[(7, 32, 0)], a[(7, 32, 0)], strict=True))
    assert not torch.equal(a[(7 + len(patches), 32, 0)][0], x1)  # same patch next epoch: a new crop/corruption
    rows = read_pairs([store], "train")
    pairs = PairDataset(rows, 0, StageConfig(crop=32, repeat=(("derain", 3),)))
    assert pairs.n_items == len([r for r in rows if r.task == "derain"]) * 3 + len(rows) - \
        len([r for r in rows if r.task == "derain"])
    assert all(torch.equal(u, v) for u, v in zip(pairs[(5, 32, 0)], pairs[(5, 32, 0)], strict=True))


def test_lr_schedule_and_dynamic_variant_are_functions_of_the_step() -> None:
    cfg = StageConfig(steps=None, epochs=3.0, schedule="warmup_cosine", warmup_epochs=1.0, cosine_epochs=4.0,
                      lr=1.0, batch_size=5)
    stream = Stream(cfg, epoch_size=10)
    lrs = [lr_at(cfg, stream, s) for s in range(6)]
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0) and lrs[2] > lrs[5] > 0
    dyn = StageConfig(variant="dynamic", p_large=0.5)
    picks = [variant_at(dyn, 0, s) for s in range(400)]
    assert picks == [variant_at(dyn, 0, s) for s in range(400)]
    assert 150 < picks.count("L") < 250
    assert {variant_at(StageConfig(variant="dynamic", p_large=1.0), 0, s) for s in range(20)} == {"L"}


def test_config_layers_and_errors(tmp_path: Path) -> None:
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("width: 16\npretrain:\n  batch_size: 8\nfinetune:\n  repeat: {derain: 2}\n")
    cfg = apply_sets(apply_yaml(TrainConfig(), yaml_file), ["pretrain.lr=2e-3", "finetune.tasks=[derain]"])
    assert (cfg.width, cfg.pretrain.batch_size, cfg.pretrain.lr) == (16, 8, 0.002)
    assert cfg.finetune.repeats == {"derain": 2} and cfg.finetune.tasks == ("derain",)
    assert cfg.finetune.lr == 2e-4 and cfg.pretrain.steps == 1_000_000  # untouched defaults stay the paper's
    with pytest.raises(ConfigError, match="unknown key 'bacth_size'"):
        apply_sets(cfg, ["pretrain.bacth_size=4"])
    with pytest.raises(ConfigError, match="not a number"):
        apply_sets(cfg, ["pretrain.lr=fast"])
    assert with_crop(cfg.corruption, 64).n_masked == 5 and with_crop(cfg.corruption, 64).n_degraded == 8


def test_holdout_and_fingerprint_do_not_depend_on_where_the_store_lives(store, tmp_path: Path) -> None:
    import shutil

    from dynet_ref.index import fingerprint
    from dynet_ref.validation import holdout_pairs, holdout_patches
    from million_ird.store import Store

    moved = Store(shutil.copytree(store.root, tmp_path / "elsewhere" / "store"))
    for stores in ([store], [moved]):  # the absolute paths differ...
        assert str(read_pairs(stores, "train")[0].clean).startswith(str(stores[0].root))
        assert str(read_patches(stores)[0].path).startswith(str(stores[0].root))
    a, b = read_pairs([store], "train"), read_pairs([moved], "train")  # ...the stream and hold-out do not
    assert fingerprint(a) == fingerprint(b) and fingerprint(read_patches([store])) == fingerprint(read_patches([moved]))
    held_a = [r.pair_id for r in holdout_pairs(a, 1, 0, True)[1]]
    held_b = [r.pair_id for r in holdout_pairs(b, 1, 0, True)[1]]
    assert held_a == held_b and held_a
    assert [p.patch_id for p in holdout_patches(read_patches([store]), 2, 0, True)[1]] == \
        [p.patch_id for p in holdout_patches(read_patches([moved]), 2, 0, True)[1]]

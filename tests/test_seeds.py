"""study.seeds computes exactly the seeds the study used before it owned them (the literal old formulas), and the
modules that draw from them give the same random numbers as the old formulas did."""

import random

import numpy as np
import pytest

from influence_study.finetune.removal import random_removal, split_test
from influence_study.models.training import packed_blocks
from influence_study.study import seeds

STUDY_SEEDS = [0, 1, 7, 42, 12345]
INDICES = [0, 1, 2, 5]


@pytest.mark.parametrize("s", STUDY_SEEDS)
@pytest.mark.parametrize("i", INDICES)
def test_integer_seeds_match_the_old_formulas(s, i):
    assert seeds.model_seed(s, i) == s + 1000 * i  # stages/steps.py
    assert seeds.factor_fit_seed(s, i) == s + 7919 * (1 + i)  # stages/influence.py
    assert seeds.finetune_task_seed(s, i) == s * 1000 + i  # finetune/datasets.py, i = task offset
    assert seeds.datainf_finetune_seed(s, i + 1) == s * 1000 + (i + 1)  # stages/finetune.py, rank i + 1
    assert seeds.removal_finetune_seed(s, i) == s * 1000 + 500 + i  # finetune/removal.py, SEED_OFFSET = 500
    assert seeds.validation_mlp_seed(s) == s + 1  # models/toy.py
    assert seeds.validation_lm_seed(s) == s + 2  # models/toy.py


@pytest.mark.parametrize("s", STUDY_SEEDS)
@pytest.mark.parametrize("i", INDICES)
def test_sequence_seeds_match_the_old_formulas(s, i):
    assert seeds.epoch_order_seed(s, i) == [s, i]  # models/training.py packed_blocks
    assert seeds.removal_split_seed(s) == [s, 17]  # finetune/removal.py SPLIT_SALT = 17
    assert seeds.random_removal_seed(s, i, 3) == [s, i, 3]  # finetune/removal.py
    assert seeds.lds_subset_seed(s, i) == [s, 0x1D5, i]  # analyses/lds.py SUBSET_SEED_TAG
    assert seeds.calibration_target_seed(s) == [s, 0xCA11]  # analyses/calibration.py TARGET_SEED_TAG
    assert seeds.calibration_control_seed(s) == [s, 0xCA11, 1]


@pytest.mark.parametrize("s", STUDY_SEEDS)
def test_string_seeds_match_the_old_formulas(s):
    assert seeds.world_names_seed(s) == f"{s}-names"  # corpus/synthetic/__init__.py
    for family in ("facts", "math", "code", "quotes"):
        assert seeds.world_family_seed(s, family) == f"{s}-{family}"
    assert seeds.unrelated_sample_seed(s) == f"{s}-unrelated"  # corpus/synthetic/overlap.py


@pytest.mark.parametrize("s", STUDY_SEEDS)
def test_the_streams_are_the_old_streams(s):
    """Same entropy, same numbers: numpy's sequence seeds and random.Random's string seeds."""
    draw = lambda entropy: np.random.default_rng(entropy).permutation(50).tolist()  # noqa: E731
    assert draw(seeds.epoch_order_seed(s, 3)) == draw([s, 3])
    assert draw(seeds.lds_subset_seed(s, 2)) == draw([s, 0x1D5, 2])
    assert draw(seeds.calibration_target_seed(s)) == draw([s, 0xCA11])
    assert draw(seeds.calibration_control_seed(s)) == draw([s, 0xCA11, 1])
    assert draw(seeds.removal_split_seed(s)) == draw([s, 17])
    assert draw(seeds.random_removal_seed(s, 1, 4)) == draw([s, 1, 4])
    assert draw(seeds.factor_fit_seed(s, 1)) == draw(s + 7919 * 2)
    assert random.Random(seeds.world_family_seed(s, "facts")).random() == random.Random(f"{s}-facts").random()
    assert random.Random(seeds.finetune_task_seed(s, 2)).random() == random.Random(s * 1000 + 2).random()


def test_the_tags_keep_their_values():
    assert (seeds.MODEL_STRIDE, seeds.FACTOR_FIT_STRIDE, seeds.FINETUNE_STRIDE, seeds.REMOVAL_OFFSET) == (
        1000, 7919, 1000, 500)
    assert (seeds.REMOVAL_SPLIT_TAG, seeds.LDS_SUBSET_TAG, seeds.CALIBRATION_TAG) == (17, 0x1D5, 0xCA11)


def test_every_derivation_is_in_the_docstring_table():
    functions = [name for name, value in vars(seeds).items()
                 if callable(value) and getattr(value, "__module__", None) == seeds.__name__]
    assert len(functions) == 16
    for name in functions:
        assert f":func:`{name}`" in seeds.__doc__, name
        assert getattr(seeds, name).__doc__, name


def test_the_callers_draw_from_the_seeds_module():
    """The modules that used to spell the formulas out now give the old numbers through study.seeds."""
    ids = [f"t{i}" for i in range(9)]
    order = np.random.default_rng([5, 17]).permutation(9)
    assert split_test(ids, 5) == ([ids[i] for i in order[:4]], [ids[i] for i in order[4:]])
    picked = np.random.default_rng([5, 1, 3]).choice(9, size=3, replace=False)
    assert random_removal(ids, 3, 5, 1) == [ids[i] for i in picked]
    documents = [[10 + d] * (1 + d) for d in range(6)]
    blocks = packed_blocks(documents, 3, 0, seed=11)
    first_epoch = np.random.default_rng([11, 0]).permutation(6)
    stream = [t for i in first_epoch for t in (0, *documents[i])]
    assert [next(blocks).tolist() for _ in range(len(stream) // 3)] == [stream[j:j + 3] for j in
                                                                        range(0, len(stream) - 2, 3)]

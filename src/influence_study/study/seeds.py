"""Every seed the study derives from its master seed (``config["seed"]``), in one place.

A random choice of the study either uses the master seed ``S`` as it is, or a value derived from it by one of
the functions below; no other module writes a seed formula of its own. The derived values are fixed: changing
one changes the study's numbers (the recorded table hashes check that they do not change).

Derived seeds (``S`` the master seed, ``i`` the position of a model in ``config["models"]``):

===============================  ========================================  ======================================
function                         value                                     seeds
===============================  ========================================  ======================================
:func:`model_seed`               ``S + 1000 * i``                          a model's initialisation and training
                                                                           (``torch.manual_seed``); the LDS and
                                                                           calibration retrains reuse it
:func:`epoch_order_seed`         ``[t, epoch]`` (``t`` the training seed)  numpy stream of the document order of
                                                                           one epoch of the packed training stream
:func:`factor_fit_seed`          ``S + 7919 * (1 + i)``                    numpy draw of the documents the factors
                                                                           of model ``i`` are fitted on, and the
                                                                           engine's sampled labels of that fit
:func:`finetune_task_seed`       ``S * 1000 + j``                          ``random.Random`` of fine-tuning task
                                                                           ``j`` (its position in ``TASKS``)
:func:`datainf_finetune_seed`    ``S * 1000 + r``                          LoRA initialisation, batch order and
                                                                           influence fits of a DataInf fine-tune
                                                                           at LoRA rank ``r``
:func:`removal_finetune_seed`    ``S * 1000 + 500 + s``                    the same for the removal fine-tunes of
                                                                           removal seed ``s``
:func:`removal_split_seed`       ``[S, 17]``                               numpy stream splitting the removal
                                                                           task's test examples in two halves
:func:`random_removal_seed`      ``[S, s, k]``                             numpy stream of the ``k`` examples the
                                                                           ``random`` condition of seed ``s``
                                                                           removes
:func:`lds_subset_seed`          ``[S, 0x1D5, subset]``                    numpy stream of one LDS subset
:func:`calibration_target_seed`  ``[S, 0xCA11]``                           numpy order in which the calibration
                                                                           targets are looked for
:func:`calibration_control_seed` ``[S, 0xCA11, 1]``                        numpy draw of the calibration control's
                                                                           candidates
:func:`validation_mlp_seed`      ``S + 1``                                 numpy choice of an MLP validation
                                                                           setting's points and measurements
:func:`validation_lm_seed`       ``S + 2``                                 numpy choice of the language-model
                                                                           validation setting's documents, points
                                                                           and measurements
:func:`world_names_seed`         ``f"{S}-names"``                          ``random.Random`` of the synthetic
                                                                           world's name book
:func:`world_family_seed`        ``f"{S}-{family}"``                       ``random.Random`` of one family of the
                                                                           synthetic world
:func:`unrelated_sample_seed`    ``f"{S}-unrelated"``                      ``random.Random`` of the unrelated
                                                                           pairs of the token-overlap summary
===============================  ========================================  ======================================

Used as it is, ``S`` seeds: the train/valid split of a user corpus, the MLP validation settings' split and
initialisation, and every bootstrap and seeded sample of the analyses (their ``seed`` argument). The tags
(``17``, ``0x1D5``, ``0xCA11``) only keep these numpy streams apart from each other and from ``default_rng(S)``.

Inside the influence engine (:mod:`influence_study.engine`, which depends on nothing of the study), a fit with
seed ``f`` samples the labels of its covariance pass from ``f`` and those of its per-sequence passes from ``f + 1``
(``engine/factors.py``), and LiSSA's power iteration starts from a vector
seeded by ``f`` (``engine/solvers.py``); these derivations belong to the engine's API and stay there.

Seeds that collide by construction use different generators: fine-tuning task ``j`` (``random.Random``) and a
DataInf fine-tune at rank ``r == j`` (torch/numpy) share the integer, not the stream of random numbers. A DataInf
rank of 500 or more would share the LoRA seed of a removal fine-tune; the config's ranks are far below.
"""

from __future__ import annotations

MODEL_STRIDE = 1000
"""Distance between the training seeds of consecutive models of the family."""
FACTOR_FIT_STRIDE = 7919
"""Distance between the factor-fit seeds of consecutive models (a prime: with fewer than 999 models no
factor-fit seed is also a training seed)."""
FINETUNE_STRIDE = 1000
"""Factor of the master seed in the fine-tuning seeds."""
REMOVAL_OFFSET = 500
"""Offset of the removal fine-tunes' seeds from the DataInf fine-tunes' (whose offset is the LoRA rank)."""
REMOVAL_SPLIT_TAG = 17
"""Tag of the removal experiment's test split stream."""
LDS_SUBSET_TAG = 0x1D5
"""Tag of the LDS subsets' streams."""
CALIBRATION_TAG = 0xCA11
"""Tag of the calibration's target and control streams."""


def model_seed(study_seed: int, model_index: int) -> int:
    """Seed of the initialisation and training of the model at position ``model_index`` of ``config["models"]``:
    ``study_seed + 1000 * model_index``."""
    return study_seed + MODEL_STRIDE * model_index


def epoch_order_seed(training_seed: int, epoch: int) -> list[int]:
    """Entropy of the numpy stream that orders the documents of epoch ``epoch`` of a training run seeded by
    ``training_seed``: ``[training_seed, epoch]``."""
    return [training_seed, epoch]


def factor_fit_seed(study_seed: int, model_index: int) -> int:
    """Seed of the factor fit of the model at position ``model_index`` (its fit documents and sampled labels):
    ``study_seed + 7919 * (1 + model_index)``."""
    return study_seed + FACTOR_FIT_STRIDE * (1 + model_index)


def finetune_task_seed(study_seed: int, task_index: int) -> int:
    """Seed of the ``random.Random`` that generates the fine-tuning task at position ``task_index`` of
    ``finetune.datasets.TASKS``: ``study_seed * 1000 + task_index``."""
    return study_seed * FINETUNE_STRIDE + task_index


def datainf_finetune_seed(study_seed: int, rank: int) -> int:
    """Seed of a DataInf LoRA fine-tune at rank ``rank`` (LoRA initialisation, batch order, influence fits):
    ``study_seed * 1000 + rank``."""
    return study_seed * FINETUNE_STRIDE + rank


def removal_finetune_seed(study_seed: int, removal_seed: int) -> int:
    """Seed of the removal fine-tunes of removal seed ``removal_seed`` (``0 .. finetune.removal.seeds - 1``):
    ``study_seed * 1000 + 500 + removal_seed``."""
    return study_seed * FINETUNE_STRIDE + REMOVAL_OFFSET + removal_seed


def removal_split_seed(study_seed: int) -> list[int]:
    """Entropy of the numpy stream that splits the removal task's test examples: ``[study_seed, 17]``."""
    return [study_seed, REMOVAL_SPLIT_TAG]


def random_removal_seed(study_seed: int, removal_seed: int, k: int) -> list[int]:
    """Entropy of the numpy stream of the ``random`` removal of ``k`` examples at removal seed ``removal_seed``:
    ``[study_seed, removal_seed, k]``."""
    return [study_seed, removal_seed, k]


def lds_subset_seed(study_seed: int, subset: int) -> list[int]:
    """Entropy of the numpy stream that draws LDS subset ``subset``: ``[study_seed, 0x1D5, subset]``."""
    return [study_seed, LDS_SUBSET_TAG, subset]


def calibration_target_seed(study_seed: int) -> list[int]:
    """Entropy of the numpy stream that orders the candidate queries of the calibration targets:
    ``[study_seed, 0xCA11]``."""
    return [study_seed, CALIBRATION_TAG]


def calibration_control_seed(study_seed: int) -> list[int]:
    """Entropy of the numpy stream that draws the calibration control's candidate documents:
    ``[study_seed, 0xCA11, 1]``."""
    return [study_seed, CALIBRATION_TAG, 1]


def validation_mlp_seed(study_seed: int) -> int:
    """Seed of the numpy choice of an MLP validation setting's scored points and measurements: ``study_seed + 1``
    (the setting's split and initialisation use ``study_seed`` itself)."""
    return study_seed + 1


def validation_lm_seed(study_seed: int) -> int:
    """Seed of the numpy choice of the language-model validation setting's training documents, scored points and
    measurements: ``study_seed + 2``."""
    return study_seed + 2


def world_names_seed(study_seed: int) -> str:
    """Seed (a string) of the ``random.Random`` of the synthetic world's name book: ``f"{study_seed}-names"``."""
    return f"{study_seed}-names"


def world_family_seed(study_seed: int, family: str) -> str:
    """Seed (a string) of the ``random.Random`` of the synthetic world's family ``family``:
    ``f"{study_seed}-{family}"``."""
    return f"{study_seed}-{family}"


def unrelated_sample_seed(seed: int) -> str:
    """Seed (a string) of the ``random.Random`` that samples the unrelated query/document pairs of
    :func:`influence_study.corpus.synthetic.overlap.relation_overlap_summary`: ``f"{seed}-unrelated"``."""
    return f"{seed}-unrelated"

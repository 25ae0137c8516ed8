"""algoperf.spec keeps upstream's names and values (spec doc §3, §4)."""

import inspect

import numpy as np
import pytest

from algoperf import param_utils, random_utils, spec


def test_enum_values_match_upstream():
    # Values transcribed from the spec document §3 (upstream algoperf/spec.py).
    assert {m.name: m.value for m in spec.LossType} == {
        'SOFTMAX_CROSS_ENTROPY': 0,
        'SIGMOID_CROSS_ENTROPY': 1,
        'MEAN_SQUARED_ERROR': 2,
        'CTC_LOSS': 3,
        'MEAN_ABSOLUTE_ERROR': 4,
    }
    assert {m.name: m.value for m in spec.ForwardPassMode} == {'TRAIN': 0, 'EVAL': 1}
    names = [
        'WEIGHT',
        'BIAS',
        'CONV_WEIGHT',
        'BATCH_NORM_SCALE',
        'BATCH_NORM_BIAS',
        'LAYER_NORM_SCALE',
        'LAYER_NORM_BIAS',
        'EMBEDDING',
        'ATTENTION_Q',
        'ATTENTION_K',
        'ATTENTION_V',
        'ATTENTION_OUT',
        'ATTENTION_QKV',
        'ATTENTION_KV',
        'ATTENTION_BIAS',
    ]
    assert [(m.name, m.value) for m in spec.ParameterType] == list(zip(names, range(15)))


def test_shape_tuple():
    a, b = spec.ShapeTuple((3, 4)), spec.ShapeTuple((3, 4))
    assert a == b and a != spec.ShapeTuple((4, 3))
    assert repr(a) == 'ShapeTuple((3, 4))'


def test_workload_abstract_members_are_upstreams():
    expected = {
        'target_metric_name',
        'has_reached_validation_target',
        'has_reached_test_target',
        '_build_input_queue',
        'validation_target_value',
        'test_target_value',
        'loss_type',
        'num_train_examples',
        'eval_batch_size',
        'num_eval_train_examples',
        'num_validation_examples',
        'num_test_examples',
        'train_mean',
        'train_stddev',
        'max_allowed_runtime_sec',
        'eval_period_time_sec',
        'step_hint',
        'is_output_params',
        'init_model_fn',
        'model_fn',
        'loss_fn',
        '_eval_model_on_split',
    }
    assert spec.Workload.__abstractmethods__ == expected
    for concrete in (
        'attach_metrics_logger',
        'output_activation_fn',
        'eval_model',
        'param_shapes',
        'model_params_types',
    ):
        assert hasattr(spec.Workload, concrete)


@pytest.mark.parametrize(
    'fn, params',
    [
        (
            spec.update_params,
            [
                'workload',
                'current_param_container',
                'current_params_types',
                'model_state',
                'hyperparameters',
                'batch',
                'loss_type',
                'optimizer_state',
                'eval_results',
                'global_step',
                'rng',
                'train_state',
            ],
        ),
        (
            spec.prepare_for_eval,
            [
                'workload',
                'current_param_container',
                'current_params_types',
                'model_state',
                'hyperparameters',
                'loss_type',
                'optimizer_state',
                'eval_results',
                'global_step',
                'rng',
            ],
        ),
        (
            spec.data_selection,
            [
                'workload',
                'input_queue',
                'optimizer_state',
                'current_param_container',
                'model_state',
                'hyperparameters',
                'global_step',
                'rng',
            ],
        ),
        (
            spec.init_optimizer_state,
            ['workload', 'model_params', 'model_state', 'hyperparameters', 'rng'],
        ),
        (spec.get_batch_size, ['workload_name']),
    ],
)
def test_submission_signatures(fn, params):
    assert list(inspect.signature(fn).parameters) == params


def test_training_complete_error_is_exception():
    assert issubclass(spec.TrainingCompleteError, Exception)


@pytest.mark.parametrize(
    'name, expected',
    [
        ('bn1.weight', 'BATCH_NORM_SCALE'),
        ('layer1.0.bn2.bias', 'BATCH_NORM_BIAS'),
        ('encoder.layer_norm.weight', 'LAYER_NORM_SCALE'),
        ('ln_f.bias', 'LAYER_NORM_BIAS'),
        ('conv1.weight', 'CONV_WEIGHT'),
        ('conv1.bias', 'BIAS'),
        ('shared_embedding.weight', 'EMBEDDING'),
        ('self_attn.in_proj.weight', 'ATTENTION_QKV'),
        ('cross_attn.kv_proj.weight', 'ATTENTION_KV'),
        ('attention.key.weight', 'ATTENTION_K'),
        ('attention.query.weight', 'ATTENTION_Q'),
        ('attention.value.weight', 'ATTENTION_V'),
        ('attention.out.weight', 'ATTENTION_OUT'),
        ('self_attn.out_proj.bias', 'ATTENTION_BIAS'),
        ('attn.scale', 'WEIGHT'),
        ('fc.bias', 'BIAS'),
        ('fc.weight', 'WEIGHT'),
        # Order matters: 'bn' wins over 'conv', 'norm' over 'attention'.
        ('conv_bn.weight', 'BATCH_NORM_SCALE'),
        ('attention_norm.weight', 'LAYER_NORM_SCALE'),
    ],
)
def test_param_types_from_names(name, expected):
    types = param_utils.pytorch_param_types({name: spec.ShapeTuple((1,))})
    assert types[name] == spec.ParameterType[expected]


def test_param_types_reject_unknown_norm_param():
    with pytest.raises(ValueError, match='batch norm'):
        param_utils.pytorch_param_types({'bn.running_thing': spec.ShapeTuple((1,))})


class TestRandomUtils:
    """Upstream semantics: RandomState(seed mod (2**31 - 1)).randint(0, 2**31 - 1, uint32)."""

    def test_prng_key_is_first_row_of_split(self):
        for seed in (0, 1, 12345, 2**31 + 7):
            expected = np.random.RandomState(seed % (2**31 - 1)).randint(
                0, 2**31 - 1, size=[2, 2], dtype=np.uint32
            )[0]
            np.testing.assert_array_equal(random_utils.PRNGKey(seed), expected)

    def test_reused_generator_matches_fresh_randomstate(self):
        # random_utils reseeds one cached generator for speed; values must be exactly those of
        # upstream's fresh RandomState(seed) for int, list and ndarray seeds.
        rng = np.random.RandomState(0)
        for _ in range(200):
            key = rng.randint(0, 2**32, size=2, dtype=np.uint64).astype(np.uint32)
            fresh = np.random.RandomState([int(k) % (2**31 - 1) for k in key])
            np.testing.assert_array_equal(random_utils.split(key, 3),
                                          fresh.randint(0, 2**31 - 1, size=[3, 2], dtype=np.uint32))
            step = int(rng.randint(0, 10**6))
            expected = np.random.RandomState([int(k) % (2**31 - 1) for k in key]).randint(0, 2**31 - 1, dtype=np.uint32)
            assert random_utils.fold_in(key, step)[0] == expected
            seed = int(rng.randint(0, 2**62))
            np.testing.assert_array_equal(
                random_utils.PRNGKey(seed),
                np.random.RandomState(seed % (2**31 - 1)).randint(0, 2**31 - 1, size=[2, 2], dtype=np.uint32)[0])
        # A fold_in result (list of [uint32, int]) seeds split like a fresh RandomState does.
        pair = random_utils.fold_in(random_utils.PRNGKey(5), 17)
        np.testing.assert_array_equal(
            random_utils.split(pair, 4),
            np.random.RandomState([int(pair[0]) % (2**31 - 1), 17]).randint(0, 2**31 - 1, size=[4, 2], dtype=np.uint32))

    def test_split_shape_dtype_and_determinism(self):
        key = random_utils.PRNGKey(7)
        a, b = random_utils.split(key, 4), random_utils.split(key, 4)
        assert a.shape == (4, 2) and a.dtype == np.uint32
        np.testing.assert_array_equal(a, b)
        assert len({tuple(r) for r in a}) == 4

    def test_fold_in_returns_upstream_pair(self):
        key = random_utils.PRNGKey(3)
        new_seed, data = random_utils.fold_in(key, 17)
        assert data == 17
        expected = np.random.RandomState([int(k) % (2**31 - 1) for k in key]).randint(
            0, 2**31 - 1, dtype=np.uint32
        )
        assert new_seed == expected
        # Different steps give different streams once split.
        s0 = random_utils.split(random_utils.fold_in(key, 0), 4)
        s1 = random_utils.split(random_utils.fold_in(key, 1), 4)
        assert not np.array_equal(s0, s1)

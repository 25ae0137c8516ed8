"""Search spaces: validation errors name file and key; Halton is seeded."""

import json

import pytest

from algoperf import halton, search_space
from algoperf.experiment import trial_seed

DICT_SPACE = {
    'learning_rate': {'min': 1e-4, 'max': 1e-2, 'scaling': 'log'},
    'one_minus_beta1': {'min': 4e-3, 'max': 0.1, 'scaling': 'log'},
    'warmup_factor': {'feasible_points': [0.05]},
    'weight_decay': {'min': 5e-3, 'max': 1.0, 'scaling': 'linear'},
    'label_smoothing': {'feasible_points': [0.1, 0.2]},
}


def test_halton_points_reproducible_for_a_seed_and_vary_across_seeds():
    space = search_space.parse(DICT_SPACE)
    a, b = space.generate(8, seed=42), space.generate(8, seed=42)
    assert a == b
    c = space.generate(8, seed=43)
    assert [p.learning_rate for p in a] != [p.learning_rate for p in c]


def test_halton_values_in_range_and_discrete_points_feasible():
    points = search_space.parse(DICT_SPACE).generate(50, seed=0)
    assert len(points) == 50 and type(points[0]).__name__ == 'Hyperparameters'
    assert all(1e-4 <= p.learning_rate <= 1e-2 for p in points)
    assert all(5e-3 <= p.weight_decay <= 1.0 for p in points)
    assert {p.label_smoothing for p in points} == {0.1, 0.2}
    assert {p.warmup_factor for p in points} == {0.05}


def test_halton_dimensions_use_upstream_bases_without_repeats():
    # Upstream's bases: for d dims, the d primes below 1000 preceding 997 (977, 983, 991 for 3); for fewer
    # points than the base each dimension visits distinct digits, so no value repeats.
    points = halton.generate_sequence(200, 3, seed=0)
    for d in range(3):
        values = [p[d] for p in points]
        assert len(set(values)) == 200
        assert all(0.0 <= v < 1.0 for v in values)
    assert halton.generate_primes(1000)[-4:] == [977, 983, 991, 997]


def test_list_space_keeps_file_order_and_clips(tmp_path):
    points = [{'lr': 0.1, 'wd': 1.0}, {'lr': 0.2, 'wd': 2.0}, {'lr': 0.3, 'wd': 3.0}]
    path = tmp_path / 's.json'
    path.write_text(json.dumps(points))
    space = search_space.load(str(path))
    got = space.generate(5, seed=123)
    assert [p.lr for p in got] == [0.1, 0.2, 0.3]
    assert [p.lr for p in space.generate(2, seed=999)] == [0.1, 0.2]


def test_baseline_search_space_is_upstreams_five_points():
    space = search_space.load('submissions/baselines/nadamw/tuning_search_space.json')
    points = space.generate(5, seed=0)
    assert len(points) == 5
    assert points[3].beta2 == 0.6291854735396584 and points[4].dropout_rate == 0.1


def test_distinct_seed_per_trial():
    for base in (0, 1, 2**31 - 2, 123456789):
        seeds = [trial_seed(base, k) for k in range(1, 21)]
        assert seeds[0] == base  # trial 1 seeds exactly like upstream
        assert len(set(seeds)) == 20
        assert seeds == [trial_seed(base, k) for k in range(1, 21)]


@pytest.mark.parametrize(
    'content, fragment',
    [
        ('{"lr": {"min": 1, "max": 2}', 'invalid JSON at line 1'),
        ('{"lr": {"min": 1e-3, "max": 1e-1, "scaling": "cubic"}}', 'key \'lr\': "scaling" must be'),
        ('{"lr": {"min": 0.0, "max": 1e-1, "scaling": "log"}}', "key 'lr': log scaling needs"),
        ('{"lr": {"min": 1, "max": 0.5, "scaling": "linear"}}', 'key \'lr\': "min" (1) is greater'),
        ('{"lr": {"max": 0.5, "scaling": "linear"}}', "key 'lr': missing field(s) ['min']"),
        (
            '{"lr": {"feasible_points": []}}',
            'key \'lr\': "feasible_points" must be a non-empty list',
        ),
        ('{"lr": 0.1}', "key 'lr': expected an object"),
        ('{"1lr": {"feasible_points": [1]}}', "key '1lr' is not a valid hyperparameter name"),
        ('[{"lr": 1}, {"wd": 2}]', 'point [1] has different keys'),
        ('[]', 'list of hyperparameter points is empty'),
        ('3', 'top level must be'),
    ],
)
def test_malformed_search_spaces_name_file_and_key(tmp_path, content, fragment):
    path = tmp_path / 'space.json'
    path.write_text(content)
    with pytest.raises(search_space.SearchSpaceError) as e:
        search_space.load(str(path))
    assert str(path) in str(e.value)
    assert fragment in str(e.value)

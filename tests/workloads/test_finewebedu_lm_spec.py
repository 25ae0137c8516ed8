"""finewebedu_lm's torch-free spec against the values `algoperf_v1.md` §1.5-1.7 documents.

Transcribed by hand from the reference (upstream MLC 4c37f2aa workload file and the frozen v1.0
scoring targets), a source independent of the code under test. No torch.
"""

from algoperf import benchmark_versions, registry
from scoring import targets


def test_documented_values():
    s = registry.get_spec('finewebedu_lm')
    assert s.kind.value == 'base' and s.base_workload == 'finewebedu_lm'
    assert (s.target_metric_name, s.higher_is_better, s.validation_target_value) == ('ppl', False, 22.2995)
    assert s.test_target_value is None and s.num_test_examples == 0
    assert (s.max_allowed_runtime_sec, s.eval_period_time_sec, s.step_hint) == (31967, 2571, 72000)
    assert (s.eval_batch_size, s.num_validation_examples, s.num_eval_train_examples) == (256, 100_000, 10_000)
    assert s.num_train_examples == 8_749_870 and s.extra['vocab_size'] == 50257
    assert s.compile_model and not s.compile_loss  # In neither upstream exception list.
    assert s.runtime_budget_sec('self') == 47_950.5


def test_scorer_direction_agrees_with_the_spec():
    assert targets.higher_is_better('ppl') is False


def test_only_v1_scores_it_and_old_versions_leave_it_unchanged():
    spec = registry.get_spec('finewebedu_lm')
    assert 'finewebedu_lm' in benchmark_versions.get('1.0').base_workloads
    for old in ('0.5', '0.6'):
        assert 'finewebedu_lm' not in benchmark_versions.get(old).base_workloads
        versioned = benchmark_versions.apply(spec, old)
        assert (versioned.max_allowed_runtime_sec, versioned.eval_period_time_sec, versioned.step_hint) == (
            spec.max_allowed_runtime_sec, spec.eval_period_time_sec, spec.step_hint)

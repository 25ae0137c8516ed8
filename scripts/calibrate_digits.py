"""Measure what the NAdamW baseline reaches on `digits`, to set honest targets.

For each seed: train the baseline (self-tuning constants, or one external point)
for `steps` steps, evaluating every `every` steps (no clock: evals are off it
anyway), and record the best validation accuracy, the first step reaching each
candidate target, and the test accuracy at that step. Used to set the targets in
workloads/digits/spec.py; the procedure and the numbers are recorded there.

    python3 scripts/calibrate_digits.py --seeds 20 --steps 2000 --every 10
"""

import argparse
import json

import numpy as np

from algoperf import random_utils as prng
from algoperf import registry, search_space
from algoperf.runtime import Runtime
import submissions.baselines.nadamw.submission as baseline


def run(seed, steps, every, hparams):
    wl = registry.get_workload('digits', runtime=Runtime.from_env(device='cpu'))
    rng = prng.split(prng.PRNGKey(seed), 2)[0]
    data_rng, opt_rng, model_rng, rng = prng.split(rng, 4)
    queue = wl._build_input_queue(data_rng, 'train', '', baseline.get_batch_size('digits'))
    model, state = wl.init_model_fn(model_rng)
    opt = baseline.init_optimizer_state(wl, model, state, hparams, opt_rng)
    curve = []
    for step in range(steps):
        baseline.update_params(wl, model, wl.model_params_types, state, hparams, next(queue), wl.loss_type, opt, [],
                               step, prng.fold_in(rng, step))
        if (step + 1) % every == 0 or step == 0:
            r = wl.eval_model(wl.eval_batch_size, model, state, rng, '', None, step + 1)
            curve.append((step + 1, r['validation/accuracy'], r['test/accuracy']))
    return curve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, default=20)
    ap.add_argument('--steps', type=int, default=2000)
    ap.add_argument('--every', type=int, default=10)
    ap.add_argument('--external_point', type=int, default=None, help='index into the baseline search space')
    args = ap.parse_args()
    hp = None
    if args.external_point is not None:
        hp = search_space.load('submissions/baselines/nadamw/tuning_search_space.json').generate(5, 0)[
            args.external_point]
    best = []
    curves = []
    for seed in range(args.seeds):
        curve = run(seed, args.steps, args.every, hp)
        curves.append(curve)
        best.append(max(v for _, v, _ in curve))
    print('best validation accuracy per seed:', best)
    print('min/median/max:', min(best), float(np.median(best)), max(best))
    for target in (0.95, 0.96, 0.965, 0.97, 0.975, 0.98):
        hits = []
        for curve in curves:
            first = next(((s, t) for s, v, t in curve if v > target), None)
            hits.append(first)
        reached = [h for h in hits if h]
        print(json.dumps({'val_target': target, 'seeds_reaching': len(reached),
                          'median_first_step': float(np.median([s for s, _ in reached])) if reached else None,
                          'max_first_step': max((s for s, _ in reached), default=None),
                          'min_test_at_first_hit': min((t for _, t in reached), default=None)}))


if __name__ == '__main__':
    main()

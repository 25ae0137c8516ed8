"""The NAdamW baseline with a sleep per step: trials long enough to interrupt mid-run."""

import os
import time

from submissions.baselines.nadamw.submission import (  # noqa: F401 (re-exported submission functions)
    data_selection,
    get_batch_size,
    init_optimizer_state,
)
from submissions.baselines.nadamw.submission import update_params as _update_params

STEP_SLEEP_SEC = float(os.environ.get('ALGOPERF_TEST_STEP_SLEEP', '0.02'))


def update_params(*args, **kwargs):
    time.sleep(STEP_SLEEP_SEC)
    return _update_params(*args, **kwargs)

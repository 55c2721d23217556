"""Active learning: ``eqcalc learn CONFIG`` / :func:`learn`.

Each round trains a committee (round K ≥ 1 fine-tunes from round K-1's), runs MD with it, picks
frames from the trajectory (uncertain and distinct, or at random as a baseline), labels them with
a reference ASE calculator and adds them to the training data of the next round. The loop is
resumable: rerun it with the same settings and it continues where it stopped.

    from eqcalc.learn import load_learn_config, learn
    result = learn(load_learn_config("learn.yaml"))
    result.rounds[-1]["stable_md_time_fs"], result.committee()

See :mod:`eqcalc.learn.config` for the settings and :mod:`eqcalc.learn.loop` for the folder layout.
"""

from .config import LearnConfig, load_learn_config
from .loop import LearnResult, learn

__all__ = ["LearnConfig", "LearnResult", "learn", "load_learn_config"]

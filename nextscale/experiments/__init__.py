"""The paper's experiments as resumable commands, each a set of ordinary training runs and their evaluation:

    ablation.py   Table 3: from a next-token baseline to VAR, one design choice per row (`nextscale ablation`)
    scaling.py    Fig. 5 and 6: a sweep of model sizes at one token budget and its power-law fits (`nextscale scaling`)
    jobs.py       one training run of either, as `nextscale train` would run it
    speed_quality.py  the speed–quality frontier of the training-free accelerations and the `fast` recipe chosen
                  from it (measured by docs/scripts/speed_quality.py; docs/performance.md)

Their configs (`ablation_config.py`, `scaling_config.py`) import no torch, so the commands answer --help at once.
"""

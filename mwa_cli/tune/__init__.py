"""`mwa tune`: the fastest training configuration that keeps the recall, found on the user's own val split.

A search (Optuna: a seeded TPE sampler, successive halving of bad trials, a journal file that makes it resumable)
over the options that trade time for recall, under one wall-clock budget; every trial is a real `mwa train` run
folder under ``<tune>/trials/``. `rule.recommend` picks the fastest trial whose val recall is within a tolerance of
the best; `config_file` writes it as a file `mwa train --config` reads; `page` draws every trial's val curve.

Modules: ``layout`` (file names, torch-free), ``settings`` (what the user asked, checked), ``space`` (the search
space of a method on a backbone), ``folder`` (the tune folder: lock, tune.json, resume checks), ``trials`` (one
trial: a training run with pruning), ``search`` (the loop over trials), ``records`` (trials as plain data),
``rule`` (the recommendation), ``config_file``, ``summary`` (terminal rows), ``page`` (HTML), ``demo``.
"""

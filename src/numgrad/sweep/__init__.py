"""Sweeps (``numgrad -m``): the Hydra callback, the parent run, the summary, the workers.

:mod:`~numgrad.sweep.callback` is what ``conf/config.yaml`` registers with Hydra; it
drives :mod:`~numgrad.sweep.parent` (the parent MLflow run),
:mod:`~numgrad.sweep.summary` (one row per job, the CSV, the best job),
:mod:`~numgrad.sweep.progress` (a line per job, the bar, the last lines),
:mod:`~numgrad.sweep.jobs` (the status file each job leaves) and
:mod:`~numgrad.sweep.workers` (stopping a parallel launcher's workers on Ctrl-C).
"""

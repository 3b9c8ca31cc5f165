"""Figures, drawn with matplotlib's Agg canvas: returned or saved as PNG, never shown.

:mod:`numgrad.plots.run` draws one run's figures, :mod:`numgrad.plots.sweep` a sweep's;
:mod:`numgrad.plots.figure` makes and saves the figures both use.
"""

"""numgrad: numerical-gradient experiments from "Deep Learning from Scratch", ch04.

The core (:mod:`numgrad.functions`, :mod:`numgrad.gradient`, :mod:`numgrad.net`,
:mod:`numgrad.descent`) needs numpy only; Hydra and MLflow live at the edges.
"""

__version__ = "0.1.0"

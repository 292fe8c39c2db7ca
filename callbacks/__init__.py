"""Lightning callbacks for training runs: per-epoch invariance evaluation, its figures, and RNG
states in checkpoints (for exact resumption)."""

from callbacks.invariance import InvarianceEvaluation, InvarianceSet
from callbacks.invariance_figures import InvarianceFigures
from callbacks.random_state import RandomStateCheckpoint

__all__ = ["InvarianceEvaluation", "InvarianceFigures", "InvarianceSet", "RandomStateCheckpoint"]

"""Lightning callbacks for training runs: per-epoch invariance evaluation, its figures, and RNG
states in checkpoints (for exact resumption), the run folder's report page."""

from callbacks.checkpoint_artifact import CheckpointArtifact
from callbacks.invariance import InvarianceEvaluation, InvarianceSet
from callbacks.invariance_figures import InvarianceFigures
from callbacks.random_state import RandomStateCheckpoint
from callbacks.report_page import ReportPage

__all__ = [
    "CheckpointArtifact",
    "InvarianceEvaluation",
    "InvarianceFigures",
    "InvarianceSet",
    "RandomStateCheckpoint",
    "ReportPage",
]

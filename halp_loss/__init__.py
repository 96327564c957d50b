"""halp-loss: HaLP (Hallucinating Latent Positives, CVPR 2023) for contrastive self-supervised learning.

Public API:
    hallucinate_positives, Hallucination -- closed-form positives on the unit sphere.
    exit_times, ExitTimes -- where each geodesic leaves its anchor's prototype cell.
    expected_halp_term -- the HaLP term's exact infinite-positives limit (HaLPInfoNCE(estimator="expected")).
    spherical_kmeans, KMeansResult -- prototypes.
    PrototypeBank -- recent keys and their prototypes, checkpointable and DDP-consistent.
    KeyQueue -- MoCo's FIFO queue of recent keys, kept by HaLPInfoNCE(memory_bank_size=K).
    HaLPInfoNCE -- InfoNCE (MoCo or SimCLR) plus the HaLP term.
    halp_loss.functional -- the functional forms of the losses.
"""

from halp_loss.bank import PrototypeBank
from halp_loss.expected import ExitTimes, exit_times, expected_halp_term
from halp_loss.geometry import Hallucination, hallucinate_positives
from halp_loss.key_queue import KeyQueue
from halp_loss.kmeans import KMeansResult, spherical_kmeans
from halp_loss.loss import HaLPInfoNCE

__version__ = "0.1.0"

__all__ = [
    "ExitTimes",
    "HaLPInfoNCE",
    "Hallucination",
    "KMeansResult",
    "KeyQueue",
    "PrototypeBank",
    "exit_times",
    "expected_halp_term",
    "hallucinate_positives",
    "spherical_kmeans",
    "__version__",
]

"""HaLPInfoNCE: InfoNCE (MoCo or SimCLR) plus the HaLP term, with its prototype bank."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from halp_loss._checks import (
    check_device,
    check_lam,
    check_matrix,
    check_negatives,
    check_number,
    check_pair,
    check_positive_int,
    check_temperature,
    compute_dtype,
)
from halp_loss.bank import PrototypeBank
from halp_loss.expected import DEFAULT_NUM_NODES, expected_term
from halp_loss.functional import (
    OBJECTIVES,
    ContrastiveLogits,
    HaLPTerm,
    info_nce_from_logits,
    moco_logits,
    no_autocast,
    sampled_term,
    simclr_logits,
)
from halp_loss.geometry import resolve_candidates, unit_rows

__all__ = ["ESTIMATORS", "HaLPInfoNCE"]

ESTIMATORS = ("sampled", "expected")


class HaLPInfoNCE(nn.Module):
    """InfoNCE plus ``halp_weight`` times the HaLP term on hallucinated positives (Shah et al., CVPR 2023).

    MoCo mode (``negatives`` given): InfoNCE over ``[q . k, q . negatives] / T`` with the positive as label.
    SimCLR mode (``negatives=None``): symmetric NT-Xent over the 2B views with in-batch negatives; both views
    act as queries, each anchored on the other.

    The HaLP term hallucinates positives from each detached anchor (the key, or the other view) toward the
    prototypes, and scores the query against the kept ones:

    - ``objective="align"`` (the released code): ``-sum keep (q . h) / T / sum keep``;
    - ``objective="infonce"``: each kept positive scored against the row's negatives,
      ``-log(e^{q.h/T} / (e^{q.h/T} + sum_j e^{q.n_j/T}))``.

    It is computed from dot products, without materializing the (B, M, D) positives, by one of two estimators:

    - ``estimator="sampled"`` (the paper): ``num_positives`` random positives per anchor;
    - ``estimator="expected"``: the exact ``num_positives -> infinity`` limit of the sampled term, averaged over
      every candidate target and step in closed form (:func:`halp_loss.expected_halp_term`): deterministic, no
      gradient noise from the draws, at about the cost of sampling 100 positives.

    Prototypes come from the module's :class:`PrototypeBank`, fed with the keys on every training-mode call after
    the loss is computed (as MoCo enqueues after the step), or from the ``prototypes`` argument, which bypasses the
    bank. Until the bank has prototypes, and whenever ``halp_weight == 0`` (the bank is then not fed either), the
    loss is exactly plain InfoNCE.

    Everything runs in float32 (float64 if the query, key or negatives are float64) with autocast disabled, so
    logits, softmax and log-sum-exp are full precision under mixed-precision training. Gradient flows into the
    query (both views in SimCLR mode), never into keys, negatives or prototypes.

    Each call checks shapes, dtypes and devices but not values, which would read from the device every step:
    non-finite embeddings give a non-finite loss for that call, and the bank leaves their keys out of its fits
    (:class:`PrototypeBank`), so later calls with finite inputs are finite again.

    Defaults are the released NTU RGB+D settings.

    Args:
        temperature: T of all logits, a finite number >= 1e-6.
        halp_weight: weight of the HaLP term, a finite number >= 0 (released code: 2 for NTU, 1 for PKU-MMD II).
        num_prototypes: P, prototypes fitted by the bank.
        num_positives: M, positives per anchor (``estimator="sampled"``; ignored by ``"expected"``).
        lam: ``u ~ U(0, lam)``, ``t = (1 - u) t_max``; float in [0, 1].
        objective: ``"align"`` or ``"infonce"``.
        prototype_window: keys the bank clusters.
        prototype_every: bank refit period, in calls.
        gather_distributed: SimCLR mode: use all ranks' views as negatives (equal per-rank batch sizes).
        num_candidates: draw targets among this many nearest other prototypes (default all ``P - 1``).
        prototype_warmup: keys seen before the bank's first fit (default ``prototype_window``).
        seed: base seed of the bank's k-means seeding, an integer >= 0.
        kmeans_iters: maximum k-means iterations per bank refit.
        kmeans_tol: k-means tolerance; ``None`` runs ``kmeans_iters`` iterations without reading a value back
            from the device each iteration.
        generator: optional generator for the positives' draws (``estimator="sampled"``); it must live on the
            embeddings' device (``torch.Generator("cuda")`` for CUDA tensors).
        estimator: ``"sampled"`` or ``"expected"``.
        num_nodes: Gauss-Legendre nodes per kept interval for ``estimator="expected"`` with
            ``objective="infonce"``; the default is accurate to ~1e-6.

    Raises:
        ValueError: for an invalid hyperparameter, naming it: a temperature or weight that is not a finite number
            in range, an unknown ``objective`` or ``estimator``, a size or seed that is not an integer in range,
            ``lam`` outside [0, 1], ``num_candidates`` outside [1, P - 1], a generator that is not a
            ``torch.Generator``.

    Example:
        >>> criterion = HaLPInfoNCE(temperature=0.07, halp_weight=2.0)
        >>> queue = torch.nn.functional.normalize(torch.randn(128, 4096), dim=0)   # MoCo's (D, K) buffer
        >>> q, k = torch.randn(64, 128, requires_grad=True), torch.randn(64, 128)
        >>> loss = criterion(q, k, queue.T)
        >>> loss.backward()
        >>> sorted(criterion.last), criterion.active   # the bank has seen 64 of its 256 warm-up keys
        (['halp', 'infonce', 'kept_fraction', 'loss', 'mean_t'], False)
    """

    def __init__(
        self,
        temperature: float = 0.07,
        halp_weight: float = 2.0,
        num_prototypes: int = 20,
        num_positives: int = 100,
        lam: float = 0.8,
        objective: str = "align",
        prototype_window: int = 256,
        prototype_every: int = 10,
        gather_distributed: bool = False,
        *,
        num_candidates: Optional[int] = None,
        prototype_warmup: Optional[int] = None,
        seed: int = 0,
        kmeans_iters: int = 50,
        kmeans_tol: Optional[float] = 1e-4,
        generator: Optional[torch.Generator] = None,
        estimator: str = "sampled",
        num_nodes: int = DEFAULT_NUM_NODES,
    ) -> None:
        super().__init__()
        temperature = check_temperature(temperature)
        halp_weight = check_number(halp_weight, "halp_weight", minimum=0.0)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        check_positive_int(num_positives, "num_positives")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        check_positive_int(num_nodes, "num_nodes")
        if isinstance(lam, Tensor):
            raise ValueError("lam must be a float in [0, 1]; per-positive tensors are for hallucinate_positives")
        check_lam(lam, 1, num_positives)
        resolve_candidates(num_candidates, num_prototypes)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.temperature = temperature
        self.halp_weight = halp_weight
        self.num_positives = num_positives
        self.lam = lam
        self.objective = objective
        self.gather_distributed = gather_distributed
        self.num_candidates = num_candidates
        self.generator = generator
        self.estimator = estimator
        self.num_nodes = num_nodes
        self.bank = PrototypeBank(
            num_prototypes,
            prototype_window,
            prototype_every,
            warmup=prototype_warmup,
            kmeans_iters=kmeans_iters,
            kmeans_tol=kmeans_tol,
            seed=seed,
        )
        self._last: dict[str, Tensor] = {}
        self._active = False

    @property
    def last(self) -> dict[str, float]:
        """Terms of the last call as floats: ``loss``, ``infonce``, ``halp``, ``kept_fraction``, ``mean_t``.

        Stored as detached tensors and converted when read, so training does not wait on the device unless
        something reads them.
        """
        return {name: float(value) for name, value in self._last.items()}

    @property
    def active(self) -> bool:
        """Whether the last call included the HaLP term (``last`` then reports 0 for its entries otherwise)."""
        return self._active

    def forward(
        self, query: Tensor, key: Tensor, negatives: Optional[Tensor] = None, *, prototypes: Optional[Tensor] = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            query: (B, D) query embeddings (MoCo) or first views (SimCLR), ``B >= 1``; receive the gradient.
            key: (B, D) momentum keys (MoCo, detached inside) or second views (SimCLR, gradient flows).
            negatives: (K, D) unit-norm negatives as rows, e.g. ``queue.T`` for MoCo's (D, K) queue buffer;
                ``None`` selects SimCLR mode.
            prototypes: optional (P, D) prototypes, ``P >= 2``, to use instead of the bank's (the bank is then not
                fed); normalized inside.

        Returns:
            Scalar loss: InfoNCE + ``halp_weight`` * HaLP term.

        Raises:
            ValueError: naming the argument, for a non-tensor, a wrong rank, dtype, width or device, an empty batch,
                ``key`` not shaped like ``query``, a (D, K) queue buffer passed as negatives, or prototypes with
                fewer rows than ``num_candidates + 1`` or 2.
        """
        self._check_inputs(query, key, negatives, prototypes)
        dtype = compute_dtype(query, key, negatives)
        with no_autocast(query.device):
            if negatives is None:
                logits = simclr_logits(query.to(dtype), key.to(dtype), self.temperature, self.gather_distributed)
            else:
                logits = moco_logits(query.to(dtype), key.to(dtype), negatives.to(dtype), self.temperature)
            infonce = info_nce_from_logits(logits)
            use_bank = prototypes is None
            halp: Optional[HaLPTerm] = None
            if self.halp_weight > 0:
                # The bank's prototypes and anchors are unit-norm already: only given prototypes are normalized.
                # The bank's are copied, since a refit below overwrites them before backward reads them.
                if not use_bank:
                    halp = self._halp_term(logits, unit_rows(prototypes.detach().to(dtype)))
                elif self.bank.ready:
                    halp = self._halp_term(logits, self.bank.prototypes.to(dtype, copy=True))
                if use_bank and self.training:
                    self.bank.update(logits.anchor, normalized=True)
        loss = infonce if halp is None else infonce + self.halp_weight * halp.loss
        self._record(loss, infonce, halp)
        return loss

    def _halp_term(self, logits: ContrastiveLogits, protos: Tensor) -> HaLPTerm:
        common = dict(
            lam=self.lam,
            num_candidates=self.num_candidates,
            objective=self.objective,
            temperature=self.temperature,
            negatives_lse=logits.negatives_lse,
        )
        # The unchecked terms: the inputs passed _check_inputs, and their value checks would read from the device.
        if self.estimator == "expected":
            return expected_term(logits.query, logits.anchor, protos, num_nodes=self.num_nodes, **common)
        return sampled_term(
            logits.query,
            logits.anchor,
            protos,
            num_positives=self.num_positives,
            generator=self.generator,
            **common,
        )

    def _record(self, loss: Tensor, infonce: Tensor, halp: Optional[HaLPTerm]) -> None:
        self._active = halp is not None
        zero = torch.zeros((), device=loss.device)
        self._last = {
            "loss": loss.detach(),
            "infonce": infonce.detach(),
            "halp": zero if halp is None else halp.loss.detach(),
            "kept_fraction": zero if halp is None else halp.kept_fraction,
            "mean_t": zero if halp is None else halp.mean_t,
        }

    def _check_inputs(
        self, query: Tensor, key: Tensor, negatives: Optional[Tensor], prototypes: Optional[Tensor]
    ) -> None:
        """Shapes, dtypes and devices only: value checks (finiteness) would read from the device every step."""
        check_pair(query, "query", key, "key")
        if negatives is not None:
            check_negatives(negatives, query)
        if prototypes is not None:
            check_matrix(prototypes, "prototypes", query.shape[1])
            check_device(prototypes, "prototypes", query, "query")
            resolve_candidates(self.num_candidates, prototypes.shape[0])

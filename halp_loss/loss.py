"""HaLPInfoNCE: InfoNCE (MoCo or SimCLR) plus the HaLP term, with its prototype bank."""

from __future__ import annotations

import warnings
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
from halp_loss.key_queue import KeyQueue, MemoryBankSize, parse_memory_bank_size

__all__ = ["ESTIMATORS", "HaLPInfoNCE"]

ESTIMATORS = ("sampled", "expected")


class HaLPInfoNCE(nn.Module):
    """InfoNCE plus ``halp_weight`` times the HaLP term on hallucinated positives (Shah et al., CVPR 2023).

    MoCo mode: InfoNCE over ``[q . k, q . negatives] / T`` with the positive as label, the negatives being the
    module's own queue of recent keys (``memory_bank_size=K``: call ``criterion(query, key)``, as with lightly's
    ``NTXentLoss(memory_bank_size=K)``) or the rows of a ``negatives`` argument (your queue, ``queue.T``).
    SimCLR mode (no queue, ``negatives=None``): symmetric NT-Xent over the 2B views with in-batch negatives; both
    views act as queries, each anchored on the other.

    The built-in queue (:class:`KeyQueue`, at ``criterion.queue``) holds the last K normalized, detached keys. Each
    call scores its queries against the keys of earlier calls and then enqueues its own (gathered from all ranks
    with ``gather_distributed``), as MoCo does; before K keys have arrived the negatives are the keys seen so far
    (none on the first call). The queue is in ``state_dict()`` and frozen in eval mode. Call the criterion once per
    step: a second call would score the first call's keys as negatives (for a symmetrized loss, pass both pairs in
    one call, concatenated).

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

    Queries, keys, views, negatives and given prototypes are normalized inside, at any magnitude; the queue's keys
    are stored normalized, so its negatives cost no normalization.

    Everything runs in float32 (float64 if the query, key or negatives are float64) with autocast disabled, so
    logits, softmax and log-sum-exp are full precision under mixed-precision training. Gradient flows into the
    query (both views in SimCLR mode), never into keys, negatives or prototypes.

    Each call checks shapes, dtypes and devices but not values, which would read from the device every step:
    non-finite embeddings give a non-finite loss for that call, the bank leaves their keys out of its fits
    (:class:`PrototypeBank`) and the queue stores them as zero rows, so later calls with finite inputs are finite
    again.

    A SimCLR-mode call in training, with gradient enabled, whose query has a gradient but whose key has none looks
    like a MoCo port that lost its queue (it would get 2B - 2 in-batch negatives instead of K): it warns once,
    unless ``memory_bank_size=0`` says that this is intended (a stop-gradient branch, a frozen second tower).

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
        gather_distributed: under ``torch.distributed``, gather what other ranks contribute: in SimCLR mode all
            ranks' views are negatives (equal per-rank batch sizes); with the built-in queue all ranks' keys are
            enqueued, so every rank holds the same queue. With explicit ``negatives`` there is nothing to gather
            and a call raises ``ValueError``. The prototype bank gathers keys from all ranks either way.
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
        memory_bank_size: K, to keep MoCo's queue of the K most recent keys inside the criterion, or ``(K, D)``
            to allocate it at construction (lightly's argument; needed if the criterion is a submodule of a
            DDP-wrapped model, whose buffers must not change shape). ``None`` keeps no queue; ``0`` also keeps none
            and says that in-batch negatives with a detached second view are intended (no warning, see above).

    Raises:
        ValueError: for an invalid hyperparameter, naming it: a temperature or weight that is not a finite number
            in range, an unknown ``objective`` or ``estimator``, a size or seed that is not an integer in range,
            ``lam`` outside [0, 1], ``num_candidates`` outside [1, P - 1], a generator that is not a
            ``torch.Generator``, a ``memory_bank_size`` that is not ``None``, K >= 0 or (K, D).

    Example:
        >>> criterion = HaLPInfoNCE(temperature=0.07, halp_weight=2.0, memory_bank_size=4096)
        >>> for step in range(2):
        ...     q, k = torch.randn(64, 128, requires_grad=True), torch.randn(64, 128)
        ...     loss = criterion(q, k)   # MoCo InfoNCE against the keys of earlier calls
        ...     loss.backward()
        >>> criterion.queue.num_seen, criterion.active   # the bank has seen 128 of its 256 warm-up keys
        (128, False)
        >>> sorted(criterion.last)
        ['halp', 'infonce', 'kept_fraction', 'loss', 'mean_t']
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
        memory_bank_size: MemoryBankSize = None,
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
        queue_size, queue_dim = parse_memory_bank_size(memory_bank_size)
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
        self.queue: Optional[KeyQueue] = (
            KeyQueue(queue_size, queue_dim, gather_distributed=gather_distributed) if queue_size else None
        )
        # memory_bank_size=0 declares in-batch negatives: a detached key is then intended, not a lost queue.
        self._warn_moco_port = memory_bank_size is None
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
            negatives: (K, D) negatives as rows, e.g. ``queue.T`` for MoCo's (D, K) queue buffer, normalized inside;
                ``None`` scores against the built-in queue if there is one, else selects SimCLR mode.
            prototypes: optional (P, D) prototypes, ``P >= 2``, to use instead of the bank's (the bank is then not
                fed); normalized inside.

        Returns:
            Scalar loss: InfoNCE + ``halp_weight`` * HaLP term.

        Raises:
            ValueError: naming the argument, for a non-tensor, a wrong rank, dtype, width or device, an empty batch,
                ``key`` not shaped like ``query``, a (D, K) queue buffer passed as negatives, negatives given to a
                criterion with a built-in queue or with ``gather_distributed``, or prototypes with fewer rows than
                ``num_candidates + 1`` or 2.
        """
        self._check_inputs(query, key, negatives, prototypes)
        if self.queue is not None:
            negatives = self.queue.negatives(query, compute_dtype(query, key))
        elif negatives is None:
            self._warn_if_moco_port(query, key)
        dtype = compute_dtype(query, key, negatives)
        with no_autocast(query.device):
            if negatives is None:
                logits = simclr_logits(query.to(dtype), key.to(dtype), self.temperature, self.gather_distributed)
            else:
                # The queue stores unit keys; explicit negatives are normalized, so their norms cannot skew the loss.
                negatives = negatives.to(dtype)
                logits = moco_logits(
                    query.to(dtype), key.to(dtype), negatives, self.temperature, unit_negatives=self.queue is not None
                )
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
            if self.queue is not None:
                # After the loss, as MoCo enqueues: this call's keys are negatives from the next call on.
                self.queue.enqueue(logits.anchor, normalized=True, reader=logits.query)
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

    def _warn_if_moco_port(self, query: Tensor, key: Tensor) -> None:
        """Warn once if a SimCLR-mode training call has a query with gradient and a key without: a MoCo loop whose
        queue was dropped. Evaluation (eval mode, ``torch.no_grad``) and SimCLR's two views with gradient do not
        look like that; a deliberate stop-gradient view is declared with ``memory_bank_size=0``."""
        if not (self._warn_moco_port and self.training and torch.is_grad_enabled()):
            return
        if query.requires_grad and not key.requires_grad:
            self._warn_moco_port = False
            warnings.warn(
                "HaLPInfoNCE got no negatives and a key without gradient, so it computes SimCLR's NT-Xent with "
                f"{2 * query.shape[0] - 2} in-batch negatives per row. For MoCo, let the criterion keep the queue "
                "(HaLPInfoNCE(..., memory_bank_size=K), then criterion(query, key)) or pass your queue as "
                "negatives=queue.T. If in-batch negatives with a detached key are intended, build the criterion "
                "with memory_bank_size=0 to say so. Shown once.",
                UserWarning,
                stacklevel=5,  # the caller of criterion(...): past forward, Module._call_impl and __call__
            )

    def _check_inputs(
        self, query: Tensor, key: Tensor, negatives: Optional[Tensor], prototypes: Optional[Tensor]
    ) -> None:
        """Shapes, dtypes and devices only: value checks (finiteness) would read from the device every step."""
        check_pair(query, "query", key, "key")
        if negatives is not None:
            if self.queue is not None:
                raise ValueError(
                    f"negatives were given, but this criterion keeps its own queue (memory_bank_size K = "
                    f"{self.queue.size}); call criterion(query, key) to score against it, or build the criterion "
                    "without memory_bank_size to pass your own negatives"
                )
            if self.gather_distributed:
                raise ValueError(
                    "gather_distributed=True has nothing to gather when negatives are given: gather your keys "
                    "before enqueueing them (halp_loss.distributed.gather_rows), or let the criterion keep the queue "
                    "(memory_bank_size=K with gather_distributed=True); the prototype bank gathers keys either way"
                )
            check_negatives(negatives, query)
        if prototypes is not None:
            check_matrix(prototypes, "prototypes", query.shape[1])
            check_device(prototypes, "prototypes", query, "query")
            resolve_candidates(self.num_candidates, prototypes.shape[0])

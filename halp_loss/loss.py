"""HaLPInfoNCE: InfoNCE (MoCo or SimCLR) plus the HaLP term, with its prototype bank."""

from __future__ import annotations

import warnings
from typing import Any, Optional

import torch
from torch import Tensor, nn

from halp_loss._checks import (
    caller_stacklevel,
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
from halp_loss._closed_form import TermParts, expected_parts, moco_loss, no_autocast, sampled_parts, term_loss
from halp_loss.bank import PrototypeBank
from halp_loss.distributed import gather_rows, world_size
from halp_loss.expected import DEFAULT_NUM_NODES
from halp_loss.functional import OBJECTIVES, info_nce_from_logits, simclr_logits
from halp_loss.geometry import (
    WalkTables,
    random_draws,
    resolve_candidates,
    unit_rows,
    walk_angles,
    walk_tables,
)
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

    The built-in queue ([`KeyQueue`][halp_loss.KeyQueue], at ``criterion.queue``) holds the last K normalized, detached
    keys. Each call scores its queries against the keys of earlier calls and then enqueues its own (gathered from all
    ranks with ``gather_distributed``), as MoCo does; before K keys have arrived the negatives are the keys seen so far
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
      every candidate target and step in closed form ([`halp_loss.expected_halp_term`][halp_loss.expected_halp_term]):
      deterministic, no gradient noise from the draws, at about the cost of sampling 100 positives.

    Prototypes come from the module's [`PrototypeBank`][halp_loss.PrototypeBank], fed with the keys on every
    training-mode call after the loss is computed (as MoCo enqueues after the step), or from the ``prototypes``
    argument, which bypasses the bank. Until the bank has prototypes, and whenever ``halp_weight == 0`` (the bank is
    then not fed either), the loss is exactly plain InfoNCE.

    Queries, keys, views, negatives and given prototypes are normalized inside, at any magnitude; the queue's keys
    are stored normalized, so its negatives cost no normalization.

    Everything runs in float32 (float64 if the query, key or negatives are float64) with autocast disabled, so
    logits, softmax and log-sum-exp are full precision under mixed-precision training. Gradient flows into the
    query (both views in SimCLR mode), never into keys, negatives or prototypes. MoCo mode and the HaLP term compute
    their gradient in closed form with the value (``halp_loss._closed_form`` derives it), first order only:
    ``torch.autograd.grad(loss, query, create_graph=True)`` raises ``RuntimeError`` (SimCLR mode with
    ``halp_weight=0`` is plain autograd and has second-order gradients).

    Each call checks shapes, dtypes and devices but not values, which would read from the device every step:
    non-finite embeddings give a non-finite loss for that call, the bank leaves their keys out of its fits
    ([`PrototypeBank`][halp_loss.PrototypeBank]) and the queue stores them as zero rows, so later calls with finite
    inputs are finite again.

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
        prototype_window: keys the bank clusters; at least the keys of one call (SimCLR mode: 2B, both views),
            or the bank keeps only the newest of them, with a ``UserWarning`` once.
        prototype_every: bank refit period, in calls.
        gather_distributed: under ``torch.distributed``, gather what other ranks contribute: in SimCLR mode all
            ranks' views are negatives (equal per-rank batch sizes, else ``ValueError`` on every rank naming the
            sizes); with the built-in queue all ranks' keys are
            enqueued, so every rank holds the same queue. With explicit ``negatives`` there is nothing to gather
            and a call raises ``ValueError``. The prototype bank gathers keys from all ranks either way.
        num_candidates: draw targets among this many nearest other prototypes (default all ``P - 1``).
        prototype_warmup: keys seen before the bank's first fit (default ``prototype_window``); below the window the
            first fit uses the keys seen so far, once ``num_prototypes`` of them are usable.
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
        check_positive_int(num_prototypes, "num_prototypes", minimum=2)
        check_positive_int(prototype_window, "prototype_window")
        if prototype_window < num_prototypes:
            raise ValueError(
                f"prototype_window ({prototype_window}) must hold at least num_prototypes ({num_prototypes}) keys"
            )
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
        self._last: dict[str, Any] = {}

    @property
    def last(self) -> dict[str, float]:
        """Terms of the last call as floats: ``loss``, ``infonce``, ``halp``, ``kept_fraction``, ``mean_t``.

        Kept as the tensors they come from and reduced when read, so that training neither waits on the device nor
        spends kernels on these diagnostics unless something reads them.
        """
        if not self._last:
            return {}
        infonce, halp = float(self._last["infonce"].mean()), self._last["halp"]
        if halp is None:
            return {"loss": infonce, "infonce": infonce, "halp": 0.0, "kept_fraction": 0.0, "mean_t": 0.0}
        weighted = float(halp.total(self._last["query"]))
        return {
            "loss": infonce + weighted,
            "infonce": infonce,
            "halp": weighted / self._last["weight"],
            "kept_fraction": float(halp.kept) / halp.count,
            "mean_t": float(halp.mean_t()),
        }

    @property
    def active(self) -> bool:
        """Whether the last call included the HaLP term (``last`` then reports 0 for its entries otherwise)."""
        return self._last.get("halp") is not None

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
                criterion with a built-in queue or with ``gather_distributed``, prototypes with fewer rows than
                ``num_candidates + 1`` or 2, or a SimCLR-mode call with ``gather_distributed`` whose batch size
                differs between ranks.
        """
        self._check_inputs(query, key, negatives, prototypes)
        weight = self.halp_weight
        negatives, negatives_t, tables, draws = self._prepare(query, key, negatives, prototypes, weight)
        dtype = compute_dtype(query, key, negatives)
        with no_autocast(query.device):
            if negatives is None:
                loss, infonce, halp, queries, anchors = self._simclr(
                    query.to(dtype), key.to(dtype), tables, draws, weight
                )
            else:
                loss, infonce, halp, queries, anchors = self._moco(
                    query, key, negatives, negatives_t, tables, draws, weight, dtype
                )
        self._record(infonce, halp, queries, anchors, weight, feed_bank=prototypes is None)
        return loss

    @torch.compiler.disable
    def _prepare(
        self, query: Tensor, key: Tensor, negatives: Optional[Tensor], prototypes: Optional[Tensor], weight: float
    ) -> tuple[Optional[Tensor], Optional[Tensor], Optional[WalkTables], Optional[tuple[Tensor, Tensor]]]:
        """The call's negatives (the queue's, or as given), the transposed queue, the walk tables and the
        sampled estimator's random draws (the last two ``None`` when the HaLP term is off).

        Run eagerly under torch.compile, as ``_record``: what depends on the queue's and the bank's counters
        (how many rows the queue holds, whether the bank has fitted, the tables of its latest fit) then reaches
        the compiled code as tensors, not as Python values it would specialize on and recompile for; and the draws
        follow the generator's stream, which compiled random ops would not.
        """
        if self.queue is not None:
            negatives = self.queue.negatives(query, compute_dtype(query, key))
        elif negatives is None:
            self._warn_if_moco_port(query, key)
        negatives_t = None if self.queue is None else negatives.T
        dtype = compute_dtype(query, key, negatives)
        tables = self._walk_tables(prototypes, dtype) if weight > 0 else None
        draws = None
        if tables is not None and self.estimator == "sampled":
            rows = query.shape[0] * (1 if negatives is not None else 2)  # SimCLR: both views are queries
            candidates = resolve_candidates(self.num_candidates, tables.prototypes.shape[0])
            draws = random_draws(rows, candidates, self.num_positives, self.generator, query.device, dtype)
        return negatives, negatives_t, tables, draws

    @torch.compiler.disable
    def _record(
        self,
        infonce: Tensor,
        halp: Optional[TermParts],
        queries: Optional[Tensor],
        anchors: Tensor,
        weight: float,
        *,
        feed_bank: bool,
    ) -> None:
        """Keep the call's terms for [`last`][halp_loss.HaLPInfoNCE.last], feed the bank and enqueue the keys (eagerly,
        see ``_prepare``).

        Under ``torch.distributed`` the bank always takes every rank's keys and the queue does with
        ``gather_distributed``; when both are fed the keys are gathered once for both.
        """
        self._last = {"infonce": infonce, "halp": halp, "query": queries, "weight": weight}
        # After the loss, as MoCo enqueues: this call's keys are negatives from the next call on.
        feed_bank = feed_bank and weight > 0
        gathered = False
        if feed_bank and self.queue is not None and self.queue.gather_distributed and world_size() > 1:
            anchors, gathered = gather_rows(anchors), True
        if feed_bank:
            self.bank.append_unit_rows(anchors, gathered=gathered)
        if self.queue is not None:
            self.queue.write_unit_rows(anchors, gathered=gathered)

    def _walk_tables(self, prototypes: Optional[Tensor], dtype: torch.dtype) -> Optional[WalkTables]:
        """The walk tables of the given prototypes, else of the bank's (cached per refit), else ``None``."""
        if prototypes is not None:
            with torch.no_grad():
                return walk_tables(unit_rows(prototypes.to(dtype)))
        return self.bank.walk_tables(dtype) if self.bank.ready else None

    def _halp_parts(
        self,
        query: Tensor,
        anchor: Tensor,
        tables: WalkTables,
        draws: Optional[tuple[Tensor, Tensor]],
        negatives_lse: Tensor,
        weight: float,
    ) -> TermParts:
        """The HaLP term of unit ``query`` rows anchored on unit ``anchor`` rows, times ``weight`` (no autograd);
        ``negatives_lse`` is (R, 1)."""
        walks = walk_angles(anchor, tables)
        common = dict(
            lam=self.lam,
            num_candidates=resolve_candidates(self.num_candidates, tables.prototypes.shape[0]),
            objective=self.objective,
            temperature=self.temperature,
            negatives_lse=negatives_lse,
            scale=weight,
        )
        if self.estimator == "expected":
            return expected_parts(query, anchor, walks, tables, num_nodes=self.num_nodes, **common)
        return sampled_parts(
            query,
            anchor,
            walks,
            tables,
            num_positives=self.num_positives,
            generator=self.generator,
            draws=draws,
            **common,
        )

    def _simclr(
        self,
        view1: Tensor,
        view2: Tensor,
        tables: Optional[WalkTables],
        draws: Optional[tuple[Tensor, Tensor]],
        weight: float,
    ) -> tuple[Tensor, Tensor, Optional[TermParts], Optional[Tensor], Tensor]:
        """NT-Xent through autograd (the views' gradients meet in the logits), plus the HaLP term in closed form.

        Returns the loss, the InfoNCE value, the HaLP term's parts and the unit query rows (both ``None`` when the
        term is off), and the unit anchors (both views, each anchoring the other).
        """
        logits = simclr_logits(view1, view2, self.temperature, self.gather_distributed)
        infonce = info_nce_from_logits(logits)
        if tables is None:
            return infonce, infonce.detach(), None, None, logits.anchor
        with torch.no_grad():
            halp = self._halp_parts(logits.query, logits.anchor, tables, draws, logits.negatives_lse[:, None], weight)
        loss = infonce + term_loss(logits.query, logits.negatives_lse, halp)
        return loss, infonce.detach(), halp, logits.query.detach(), logits.anchor

    def _moco(
        self,
        query: Tensor,
        key: Tensor,
        negatives: Tensor,
        negatives_t: Optional[Tensor],
        tables: Optional[WalkTables],
        draws: Optional[tuple[Tensor, Tensor]],
        weight: float,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor, Optional[TermParts], Tensor, Tensor]:
        """MoCo's InfoNCE and the HaLP term (``halp_loss._closed_form.moco_loss``); the queue's keys are unit rows
        already (``negatives_t`` given), explicit negatives are normalized.

        Returns the loss, the rows' InfoNCE losses, the HaLP term's parts (``None`` when off), the unit queries and
        the unit keys.
        """
        halp = None
        if tables is not None:

            def halp(q: Tensor, k: Tensor, negatives_lse: Tensor) -> TermParts:
                return self._halp_parts(q, k, tables, draws, negatives_lse, weight)

        out = moco_loss(query, key, negatives, self.temperature, dtype, negatives_t=negatives_t, halp=halp)
        return out.loss, out.rows, out.halp, out.query, out.key

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
                stacklevel=caller_stacklevel(),
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

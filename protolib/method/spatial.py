"""An edit in space: leave out of the pooling the cells where chosen parts are present.

This changes the model's computation (which cells are averaged before the head), not its head. The
edited model, for a photo with features ``f_hw`` on its H x W grid and a set of chosen parts (class
label c, prototype i):

    left out_hw = any over the chosen (c, i) of  presence_ci(f)_hw >= level
    pooled      = sum over kept cells of f_hw / number of kept cells
    logit_c'    = pooled . v_c' + b_c'                  (for every class c' of the model)

``presence_ci`` is the part's presence map as the app computes it (``PrototypeHead.presence``: the NMF part
scaled so that 1 is its "strongly present" level, the 0.99 quantile of its map on the class's training cells;
cells read with the run's ``presence_damping``). The default level is 0.3, the level from which the part map
(``explain.part_map``) colours a part: the cells the page draws as that part. Level 1 would be too strict to
use: on held-out sample photos a part's presence rarely reaches it anywhere (the strongest cells of 6 val photos
of a Lite0 run are at 0.1 to 0.98), so it would leave out nothing. The chosen parts' mask applies to every
class's logit of the photo: the photo has one pooled vector. When every cell of a photo would be left out,
nothing is: that photo keeps the original pooling (``pool_kept`` says which photos that happened to). The head
(and any scale edit) then reads the edited pooled vector, so contributions stay exact:
``logit_c = sum_i pooled . p~_ci + b_c``.

The edit can also *keep* only where chosen parts are (``keep_where``): every cell of a photo is left out but
the ``keep_share`` of its cells where those parts' summed presence is highest.
On the shortcut benchmark, keeping the 10 % of each photo's cells where the object parts (every part the mask
rule does not call background) are most present repairs the model (``bench/shortcut_signed_space.py``): the
background must go almost entirely (90 % of its cells left out is not enough), while most object cells may go
with it, and no discovered part is present on the background alone. A cell is left out when either rule says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .head import PrototypeHead, read_cells

#: the manifest key of a run's edit in space
KEY = "spatial_edit"
#: the presence level from which a cell counts as the part's (1 = "strongly present"; 0.3: as the part map draws)
LEVEL = 0.3
#: the share of a photo's cells a keep-edit keeps (chosen on the shortcut benchmark's val split, 0.1 of 0.1/0.2/0.3)
KEEP_SHARE = 0.1
#: photos whose cells are masked at once (bounds the memory of the (B, H*W, m) presence)
BATCH = 256


@dataclass(frozen=True)
class SpatialEdit:
    """Which parts' cells are left out of the pooling: ``leave_out`` (class label, prototype) pairs, in the
    model's label space and 0-based, and the presence ``level``; and which parts' cells alone are kept:
    ``keep_where`` pairs, each photo keeping the ``keep_share`` of its cells where they are most present."""

    leave_out: tuple[tuple[int, int], ...] = ()
    level: float = LEVEL
    keep_where: tuple[tuple[int, int], ...] = ()
    keep_share: float = KEEP_SHARE

    def __post_init__(self) -> None:
        for name in ("leave_out", "keep_where"):
            object.__setattr__(self, name, tuple(sorted({(int(c), int(i)) for c, i in getattr(self, name)})))
        object.__setattr__(self, "level", float(self.level))
        object.__setattr__(self, "keep_share", float(self.keep_share))

    def __bool__(self) -> bool:
        return bool(self.leave_out or self.keep_where)

    def to_manifest(self) -> dict:
        manifest = {"leave_out": [list(pair) for pair in self.leave_out], "level": self.level}
        if self.keep_where:  # runs without a keep-edit keep the manifest they always had
            manifest.update(keep_where=[list(pair) for pair in self.keep_where], keep_share=self.keep_share)
        return manifest

    def describe(self, names: Mapping[int, str] | Sequence[str]) -> str:
        """A readable note, e.g. ``cells left out of the pooling where tench P1 is present``."""
        if not self:
            return "no change"
        said = []
        if self.leave_out:
            parts = ", ".join(f"{names[c]} P{i + 1}" for c, i in self.leave_out)
            level = "" if self.level == LEVEL else f" (presence >= {self.level:g})"
            said.append(f"cells left out of the pooling where {parts} is present{level}")
        if self.keep_where:
            parts = ", ".join(f"{names[c]} P{i + 1}" for c, i in self.keep_where)
            said.append(f"only the {100 * self.keep_share:g} % of each photo's cells where {parts} are most present pooled")
        return "; ".join(said)


def spatial_problem(value: object, k: int, classes: Iterable[int] | None = None) -> str | None:
    """Why a manifest's ``spatial_edit`` cannot be used, or None: ``{"leave_out": [[class label, prototype],
    ...], "level": number > 0}``, each class one of the run's and each prototype in 0..k-1."""
    if not isinstance(value, dict) or not isinstance(value.get("leave_out"), list):
        return f"{KEY} is not an object with a list 'leave_out'"
    if set(value) - {"leave_out", "level", "keep_where", "keep_share"}:
        return f"{KEY} has unknown keys {sorted(set(value) - {'leave_out', 'level', 'keep_where', 'keep_share'})}"
    level = value.get("level", LEVEL)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not level > 0 or level == float("inf"):
        return f"{KEY} level {level!r} is not a positive number"
    if not isinstance(value.get("keep_where", []), list):
        return f"{KEY} keep_where is not a list"
    share = value.get("keep_share", KEEP_SHARE)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        return f"{KEY} keep_share {share!r} is not a share in (0, 1]"
    known = None if classes is None else set(int(c) for c in classes)
    for pair in [*value["leave_out"], *value.get("keep_where", [])]:
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is int for x in pair)):
            return f"{KEY} entry {pair!r} is not [class label, prototype]"
        if known is not None and pair[0] not in known:
            return f"{KEY} names class {pair[0]}, which the run did not decompose"
        if not 0 <= pair[1] < k:
            return f"{KEY} names prototype {pair[1]} of {k}"
    return None


def from_manifest(manifest: dict) -> SpatialEdit | None:
    """The edit a (validated) manifest carries, or None (older runs have none)."""
    value = manifest.get(KEY)
    if not value or not (value.get("leave_out") or value.get("keep_where")):
        return None
    return SpatialEdit(
        tuple(tuple(pair) for pair in value["leave_out"]),
        value.get("level", LEVEL),
        tuple(tuple(pair) for pair in value.get("keep_where", [])),
        value.get("keep_share", KEEP_SHARE),
    )


# -- the edited computation ------------------------------------------------------------------------------
def chosen_parts(head: PrototypeHead, edit: SpatialEdit | None, field: str = "leave_out") -> torch.Tensor:
    """(m, D) the part vectors of the parts the edit names in ``field`` (``leave_out`` or ``keep_where``;
    ``head.part_vectors``: presence 1 = strongly present)."""
    pairs = getattr(edit, field) if edit else ()
    if not pairs:
        return head.part_vectors.new_zeros(0, head.part_vectors.shape[-1])
    return torch.stack([head.part_vectors[head.position(c), i] for c, i in pairs])


def left_out_cells(features: torch.Tensor, parts: torch.Tensor, level: float = LEVEL, damping: float = 0.0) -> torch.Tensor:
    """Features (B, ..., D) on the grid -> bool (B, ...): the cells where any of ``parts`` (m, D) reaches
    ``level`` (presence as ``PrototypeHead.presence`` computes it: cells read with ``damping`` . part)."""
    if not len(parts):
        return torch.zeros(features.shape[:-1], dtype=torch.bool, device=features.device)
    presence = read_cells(features, damping) @ parts.to(features).T
    return (presence >= level).any(dim=-1)


def kept_cells(features: torch.Tensor, parts: torch.Tensor, share: float = KEEP_SHARE, damping: float = 0.0) -> torch.Tensor:
    """Features (B, ..., D) -> bool (B, ...): per photo, the ``share`` of its cells (at least one) where the
    summed presence of ``parts`` (m >= 1, D; cells read with ``damping``) is highest (cells tied with the last
    one kept are kept too)."""
    score = (read_cells(features, damping) @ parts.to(features).T).sum(dim=-1).flatten(1)
    n = max(1, round(share * int(score.shape[1])))  # int(): a size is a tensor while the export traces
    return (score >= torch.topk(score, n, dim=1).values[:, -1:]).view(features.shape[:-1])


def edit_mask(
    features: torch.Tensor, leave_out: torch.Tensor, level: float, keep_where: torch.Tensor, share: float, damping: float = 0.0
) -> torch.Tensor:
    """The cells an edit leaves out (B, ...): where a ``leave_out`` part reaches ``level``, and, when
    ``keep_where`` names parts, every cell outside their ``share`` of the photo (:func:`kept_cells`); presence
    read with ``damping`` (the head's ``presence_damping``)."""
    mask = left_out_cells(features, leave_out, level, damping)
    return mask | ~kept_cells(features, keep_where, share, damping) if len(keep_where) else mask


def cells_left_out(head: PrototypeHead, features: torch.Tensor, edit: SpatialEdit | None) -> torch.Tensor:
    """Features (B, ..., D) -> bool (B, ...): the cells ``edit`` leaves out (:func:`edit_mask` with its parts),
    before :func:`pool_kept` gives a photo whose every cell would go all of them back."""
    if not edit:
        return torch.zeros(features.shape[:-1], dtype=torch.bool, device=features.device)
    keep = chosen_parts(head, edit, "keep_where")
    return edit_mask(features, chosen_parts(head, edit), edit.level, keep, edit.keep_share, head.presence_damping)


def pool_kept(features: torch.Tensor, left_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (B, ..., D) and the cells left out (B, ...) -> (pooled (B, D): the mean over the kept cells,
    or over all cells for a photo whose every cell is left out; bool (B,): those photos)."""
    flat = features.flatten(1, -2)
    keep = (~left_out.flatten(1)).to(flat.dtype).unsqueeze(-1)
    kept = keep.sum(dim=1)
    everything = kept[:, 0] == 0
    pooled = (flat * keep).sum(dim=1) / kept.clamp_min(1)
    return torch.where(everything.unsqueeze(-1), flat.mean(dim=1), pooled), everything


@dataclass
class EditedPooling:
    """The edited pooling of a set of photos: ``pooled`` (B, D), the share of each photo's cells left out
    (B,), and the photos that kept every cell because all would have been left out (B,)."""

    pooled: torch.Tensor
    left_out_share: torch.Tensor
    all_left_out: torch.Tensor


def edited_pooling(head: PrototypeHead, features: torch.Tensor, edit: SpatialEdit | None, batch: int = BATCH) -> EditedPooling:
    """The edited pooling of photos' features (B, H, W, D) or (B, H*W, D), in batches."""
    parts, level = chosen_parts(head, edit), edit.level if edit else LEVEL
    keep, keep_share = chosen_parts(head, edit, "keep_where"), edit.keep_share if edit else KEEP_SHARE
    pooled, share, everything = [], [], []
    for start in range(0, len(features), batch):
        chunk = features[start : start + batch].float()
        mask = edit_mask(chunk, parts, level, keep, keep_share, head.presence_damping)
        p, e = pool_kept(chunk, mask)
        pooled.append(p)
        share.append(mask.flatten(1).float().mean(dim=1))
        everything.append(e)
    if not pooled:
        d = features.shape[-1]
        return EditedPooling(torch.zeros(0, d), torch.zeros(0), torch.zeros(0, dtype=torch.bool))
    return EditedPooling(torch.cat(pooled), torch.cat(share), torch.cat(everything))


def edited_logits(
    head: PrototypeHead, features: torch.Tensor, edit: SpatialEdit | None, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, C_all), contributions (B, C, k)) of the edited model: the edited pooling, then the head
    with the intervention ``scale`` (C, k) if any."""
    pooled = edited_pooling(head, features, edit).pooled
    contributions = head.contributions(pooled)
    return head.logits(pooled, contributions, scale), contributions


def split_pooling(
    head: PrototypeHead, matrices: Mapping[int, torch.Tensor], n_photos: int, edit: SpatialEdit | None
) -> EditedPooling:
    """The edited pooling of a held-out split from its cached cells (``SplitFeatures.matrices``: label ->
    (n*H*W, D), class by class in the order of ``SplitFeatures.paths``), without copying them."""
    total = sum(len(m) for m in matrices.values())
    if n_photos == 0 or total % n_photos:
        raise ValueError(f"{total} feature cells do not split into {n_photos} photos")
    cells = total // n_photos
    parts = [edited_pooling(head, m.reshape(-1, cells, m.shape[-1]), edit) for m in matrices.values()]
    return EditedPooling(*(torch.cat([getattr(p, name) for p in parts]) for name in ("pooled", "left_out_share", "all_left_out")))

"""An edit in space: leave out of the pooling the cells where chosen parts are present.

This changes the model's computation (which cells are averaged before the head), not its head. The
edited model, for a photo with features ``f_hw`` on its H x W grid and a set of chosen parts (class
label c, prototype i):

    left out_hw = any over the chosen (c, i) of  presence_ci(f)_hw >= level
    pooled      = sum over kept cells of f_hw / number of kept cells
    logit_c'    = pooled . v_c' + b_c'                  (for every class c' of the model)

``presence_ci`` is the part's presence map as the app computes it (``PrototypeHead.presence``: the NMF part
scaled so that 1 is its "strongly present" level, the 0.99 quantile of its heatmap on the class's training
cells). The default level is 0.3, the level from which the part map (``explain.part_map``) colours a part:
the cells the page draws as that part. Level 1 would be too strict to use: on held-out sample photos a
part's presence rarely reaches it anywhere (the strongest cells of 6 val photos of a Lite0 run are at
0.1 to 0.98), so it would leave out nothing. The chosen parts' mask applies to every class's logit of the
photo: the photo has one pooled vector. When every cell of a photo would be left out, nothing is: that photo keeps the original
pooling (``pool_kept`` says which photos that happened to). The head (and any scale edit) then reads
the edited pooled vector, so contributions stay exact: ``logit_c = sum_i pooled . p~_ci + b_c``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .head import PrototypeHead

#: the manifest key of a run's edit in space
KEY = "spatial_edit"
#: the presence level from which a cell counts as the part's (1 = "strongly present"; 0.3: as the part map draws)
LEVEL = 0.3
#: photos whose cells are masked at once (bounds the memory of the (B, H*W, m) presence)
BATCH = 256


@dataclass(frozen=True)
class SpatialEdit:
    """Which parts' cells are left out of the pooling: ``leave_out`` (class label, prototype) pairs, in the
    model's label space and 0-based, and the presence ``level``."""

    leave_out: tuple[tuple[int, int], ...] = ()
    level: float = LEVEL

    def __post_init__(self):
        pairs = tuple(sorted({(int(c), int(i)) for c, i in self.leave_out}))
        object.__setattr__(self, "leave_out", pairs)
        object.__setattr__(self, "level", float(self.level))

    def __bool__(self) -> bool:
        return bool(self.leave_out)

    def to_manifest(self) -> dict:
        return {"leave_out": [list(pair) for pair in self.leave_out], "level": self.level}

    def describe(self, names: Mapping[int, str] | Sequence[str]) -> str:
        """A readable note, e.g. ``cells left out of the pooling where tench P1 is present``."""
        if not self.leave_out:
            return "no change"
        parts = ", ".join(f"{names[c]} P{i + 1}" for c, i in self.leave_out)
        level = "" if self.level == LEVEL else f" (presence >= {self.level:g})"
        return f"cells left out of the pooling where {parts} is present{level}"


def spatial_problem(value, k: int, classes: Iterable[int] | None = None) -> str | None:
    """Why a manifest's ``spatial_edit`` cannot be used, or None: ``{"leave_out": [[class label, prototype],
    ...], "level": number > 0}``, each class one of the run's and each prototype in 0..k-1."""
    if not isinstance(value, dict) or not isinstance(value.get("leave_out"), list):
        return f"{KEY} is not an object with a list 'leave_out'"
    if set(value) - {"leave_out", "level"}:
        return f"{KEY} has unknown keys {sorted(set(value) - {'leave_out', 'level'})}"
    level = value.get("level", LEVEL)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not level > 0 or level == float("inf"):
        return f"{KEY} level {level!r} is not a positive number"
    known = None if classes is None else set(int(c) for c in classes)
    for pair in value["leave_out"]:
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
    if not value or not value.get("leave_out"):
        return None
    return SpatialEdit(tuple(tuple(pair) for pair in value["leave_out"]), value.get("level", LEVEL))


# -- the edited computation ------------------------------------------------------------------------------
def chosen_parts(head: PrototypeHead, edit: SpatialEdit | None) -> torch.Tensor:
    """(m, D) the part vectors of the chosen parts (``head.part_vectors``: presence 1 = strongly present)."""
    if not edit:
        return head.part_vectors.new_zeros(0, head.part_vectors.shape[-1])
    return torch.stack([head.part_vectors[head.position(c), i] for c, i in edit.leave_out])


def left_out_cells(features: torch.Tensor, parts: torch.Tensor, level: float = LEVEL) -> torch.Tensor:
    """Features (B, ..., D) on the grid -> bool (B, ...): the cells where any of ``parts`` (m, D) reaches
    ``level`` (presence as ``PrototypeHead.presence`` computes it: clamped features . part)."""
    if not len(parts):
        return torch.zeros(features.shape[:-1], dtype=torch.bool, device=features.device)
    presence = features.clamp_min(0) @ parts.to(features).T
    return (presence >= level).any(dim=-1)


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
    pooled, share, everything = [], [], []
    for start in range(0, len(features), batch):
        chunk = features[start : start + batch].float()
        mask = left_out_cells(chunk, parts, level)
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

"""What the shortcut benchmark compares and under which protocol: its methods and :class:`ShortcutConfig`
(sizes and protocol, fixed before any result under it; stated in shortcut.json)."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.synthetic import parts_of_class
from . import shortcut_space as space
from .dfr import DFR_C

METHODS = ("original", "dfr", "prototypes_by_mask", "prototypes_few_labels", space.NAME, "oracle")
PROTOTYPE_METHODS = ("prototypes_by_mask", "prototypes_few_labels", space.NAME)
METHOD_LABELS = {
    "original": "original model",
    "dfr": "DFR: last layer retrained (group-balanced labels)",
    "prototypes_by_mask": "prototypes switched off by mask (5 masks per class)",
    "prototypes_few_labels": "prototype scales fitted (group-balanced labels)",
    space.NAME: space.LABEL,
    "oracle": "oracle (Table 4 rule, test labels; reference only)",
}


@dataclass(frozen=True)
class ShortcutConfig:
    """Sizes and protocol (fixed before any result; see ``shortcut.py``'s docstring)."""

    num_classes: int = 4
    size: int = 112
    train_per_class: int = 150  # CNN training, background = own with probability ``spurious``
    heldout_per_class: int = 40  # the same distribution, not trained on: decomposition and mask photos
    labels_per_group: int = 10  # val split, group-balanced: DFR's and the fitted scales' labelled set
    test_per_group: int = 25  # test split, group-balanced
    spurious: float = 0.95
    epochs: int = 14
    k_extra: int = 2  # k = the largest number of parts of a class + k_extra, one k for all classes
    mask_photos_per_class: int = 5
    mask_threshold: float = 0.5
    fit_steps: int = 300
    fit_lr: float = 0.05
    dfr_halves: int = 5
    data_seed: int = 0
    discovery: str = "nmf"  # how the prototypes are found (method.discovery); "nmf" is the paper's NMF

    @property
    def k(self) -> int:
        return max(len(parts_of_class(c)) for c in range(self.num_classes)) + self.k_extra

    def protocol(self) -> str:
        g = self.num_classes**2
        return (
            f"Data (one set for all seeds, data seed {self.data_seed}): {self.num_classes} generated classes at "
            f"{self.size} px, each object on a background; train: {self.train_per_class} photos per class, own "
            f"background with probability {self.spurious:g}, another uniformly otherwise; heldout: "
            f"{self.heldout_per_class} per class from the same distribution; val: {self.labels_per_group} and test: "
            f"{self.test_per_group} photos per (class, background) group ({g} groups). Model (per seed): PartsNet "
            f"trained on train for exactly {self.epochs} epochs (AdamW lr 3e-3, weight decay 5e-4, batch 32, flips "
            f"and quarter turns, one-cycle schedule), no early stopping or model selection. Decomposition: "
            f"run_decomposition on the heldout split, k = {self.k} for every class (largest number of parts + "
            f"{self.k_extra}), discovery {self.discovery!r}, NMF seed = model seed. dfr: L1 logistic regression "
            f"(multinomial, scikit-learn's "
            f"objective, FISTA) on pooled "
            f"features standardised with the heldout split's statistics, fitted on the whole val split with C "
            f"chosen from {list(DFR_C)} by mean worst-group accuracy over {self.dfr_halves} random group-balanced "
            f"halves of val (fit on one half, score the other). prototypes_by_mask: a prototype is switched off "
            f"(scale 0) when more than {self.mask_threshold:g} of the positive part of its heatmap f.p~ (upsampled "
            f"bilinearly to the photo) lies on the background mask, summed over the first "
            f"{self.mask_photos_per_class} heldout photos of its class. prototypes_few_labels: scales in [0, 1] "
            f"fitted on val by Adam (lr {self.fit_lr:g}, {self.fit_steps} full-batch steps, from 1) on the "
            f"group-balanced cross-entropy of the prototype head's logits, projected on [0, 1] after each step. "
            f"{space.PROTOCOL} oracle: the paper's Table-4 rule, per test photo with its true label (reference only). The data "
            f"design (grey object body, texture contrast) and the number of epochs were chosen in pilots that "
            f"read only the heldout and val splits; every other choice was fixed before any run; the test split "
            f"gives the reported numbers only. Means over seeds."
        )

"""A run as a plain ``torch.nn.Module`` that leaves this project: backbone + prototype head + its preprocessing.

``load_model(run)`` gives a :class:`PrototypeModel` whose ``forward(images)`` are the run's logits (the
model's whole label space, the decomposed classes through their prototypes, with any saved intervention
applied) and whose ``contributions(images)`` are the per-prototype contributions. A run with an edit in space
(``method.spatial``) pools only the cells its chosen parts leave: the mask is computed in ``forward``. ``export_torchscript``
writes the same model as one TorchScript file that ``torch.jit.load`` runs without protolib; its
``protoscope.json`` extra file holds the class names, the prototypes' names and the preprocessing.

Two standard formats, both needing nothing but torch at load time: TorchScript (``torch.jit.trace``, a
``.pt`` file with ``forward`` and ``contributions``; the default, read by any torch since 1.x) and a
``torch.export`` program (``.pt2``, ``forward`` only; TorchScript's successor). ONNX would need the ``onnx``
package, which is not pinned.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .backbones import Backbone
from .backbones.base import Preprocessing
from .files import atomic_path
from .method.head import PrototypeHead
from .method.spatial import KEEP_SHARE, LEVEL, SpatialEdit, chosen_parts, edit_mask, pool_kept
from .runs import Run, load_run

if TYPE_CHECKING:
    from PIL import Image

#: version 2 calls the prototypes' names ``prototype_names`` (version 1: ``prototype_labels``)
FORMAT = "protoscope.torchscript/2"
METADATA = "protoscope.json"  # the extra file of an exported model
#: how far the exported model's logits may be from the module it was traced from (float error only)
EXPORT_TOLERANCE = 1e-4


class PrototypeModel(nn.Module):
    """A run's prototype network as one module: ``forward(images (B, 3, S, S)) -> logits (B, C_all)``.

    ``images`` are preprocessed as the model's weights expect (``preprocess`` does it for a PIL image);
    ``class_names`` index the logits; ``decomposed`` are the labels of the classes written as prototypes, and
    ``prototype_names`` maps each decomposed class's name to the names of its k prototypes ("" unnamed).
    ``spatial`` (optional) is an edit in space: the cells where its parts are present are left out of the pooling.
    """

    leave_out_parts: torch.Tensor  # registered buffers, declared so that reading them is typed as tensors
    keep_parts: torch.Tensor

    def __init__(
        self,
        backbone: Backbone,
        head: PrototypeHead,
        prototype_names: dict[str, list[str]] | None = None,
        info: dict | None = None,
        spatial: SpatialEdit | None = None,
    ) -> None:
        super().__init__()
        # the chosen parts' vectors (m, D; m = 0: the original pooling) and their presence level
        self.register_buffer("leave_out_parts", chosen_parts(head, spatial).clone())
        self.level: float = spatial.level if spatial else LEVEL
        # a keep-edit's parts (m, D; m = 0: none) and the share of each photo's cells it keeps
        self.register_buffer("keep_parts", chosen_parts(head, spatial, "keep_where").clone())
        self.keep_share: float = spatial.keep_share if spatial else KEEP_SHARE
        self.presence_damping: float = head.presence_damping  # how the chosen parts' presence reads a cell
        self.backbone = backbone
        self.head = head
        self.preprocessing: Preprocessing = backbone.preprocessing
        self.class_names: list[str] = list(backbone.class_names)
        self.decomposed: list[int] = [int(c) for c in head.classes]
        self.prototype_names: dict[str, list[str]] = dict(prototype_names or {})
        self.info: dict = dict(info or {})
        self.eval()

    @property
    def k(self) -> int:
        return self.head.k

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> the pooled features (B, D) the head reads (the kept cells' mean under an edit
        in space)."""
        spatial = self.backbone.spatial_features(images)
        if not len(self.leave_out_parts) and not len(self.keep_parts):
            return spatial.mean(dim=(2, 3))
        cells = spatial.permute(0, 2, 3, 1)
        mask = edit_mask(cells, self.leave_out_parts, self.level, self.keep_parts, self.keep_share, self.presence_damping)
        return pool_kept(cells, mask)[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> logits (B, C_all): the decomposed classes as sums of prototype contributions."""
        pooled = self.pooled(images)
        return self.head.logits(pooled, self.head.contributions(pooled))

    def contributions(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> contributions (B, C, k) of every decomposed class's prototypes (class c's logit
        is their sum plus its bias)."""
        return self.head.contributions(self.pooled(images))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """A PIL image -> the normalised tensor (3, S, S) ``forward`` expects (stack them for a batch)."""
        return self.preprocessing.transform()(image.convert("RGB"))

    def metadata(self) -> dict:
        """What an exported file carries beside the weights: names, labels, preprocessing, outputs."""
        return {
            "format": FORMAT,
            **self.info,
            "class_names": self.class_names,
            "decomposed": self.decomposed,
            "decomposed_names": [self.class_names[c] for c in self.decomposed],
            "k": self.k,
            "prototype_names": self.prototype_names,
            "preprocessing": asdict(self.preprocessing),
            "input": "float32 images (B, 3, S, S): RGB in [0, 1] resized (shorter side resize_size, interpolation), "
            "centre-cropped to crop_size, then normalised with mean and std",
            "outputs": {
                "forward": "logits (B, len(class_names))",
                "contributions": "(B, len(decomposed), k): class c's logit = their sum over k + its bias",
            },
        }


def model_from_run(run: Run, backbone: Backbone | None = None, device: str | torch.device = "cpu") -> PrototypeModel:
    """The prototype network of ``run`` (with its saved intervention), on ``backbone`` or the model it names."""
    backbone = backbone if backbone is not None else run.load_backbone(device)
    head = run.head(backbone)
    names = [backbone.class_names[int(c)] for c in run.classes]
    labels = dict(zip(names, run.prototype_name_grid()))
    info = {
        "run": run.path.name if run.path else None,
        "backbone": run.manifest["backbone"],
        "fingerprint": run.manifest["fingerprint"],
        "strategy": run.strategy,
        "intervention": run.manifest.get("intervention"),
    }
    spatial = run.spatial_edit
    if spatial:
        # how the edit's part maps read a cell (``method.head.read_cells``), so that its cells can be read back
        info["spatial_edit"] = {
            **spatial.to_manifest(),
            "presence_damping": run.presence_damping,
            "note": spatial.describe(backbone.class_names),
        }
    return PrototypeModel(backbone, head.to(backbone.device), labels, info, spatial)


def load_model(run_path: str | Path, device: str | torch.device = "cpu") -> PrototypeModel:
    """Any saved run as a ``torch.nn.Module``: ``load_model("runs/lite0-k3")(images)`` are its logits."""
    return model_from_run(load_run(run_path), device=device)


def _trace(model: PrototypeModel, example: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated, yet the format runs anywhere
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace_module(model, {"forward": example, "contributions": example}, check_trace=False)


def export_torchscript(model: PrototypeModel | Run | str | Path, out: str | Path, example: torch.Tensor | None = None) -> Path:
    """Write ``model`` (a PrototypeModel, a run, or a run folder) as one TorchScript file at ``out``, atomically.

    The file has the methods ``forward`` (logits) and ``contributions``, any batch size, and ``protoscope.json``
    as an extra file. The traced module is checked against ``model`` on other inputs before it is written
    (ValueError when they differ by more than ``EXPORT_TOLERANCE``)."""
    model = _as_model(model).eval()
    size = model.preprocessing.crop_size
    generator = torch.Generator().manual_seed(0)
    if example is None:
        example = torch.randn(2, 3, size, size, generator=generator)
    traced = _trace(model, example.to(model.device))
    check = torch.randn(3, 3, size, size, generator=generator).to(model.device)
    with torch.no_grad():
        gap = float((traced(check) - model(check)).abs().max())
        scale = max(1.0, float(model(check).abs().max()))
    if gap > EXPORT_TOLERANCE * scale:
        raise ValueError(f"the traced model differs from {model.info.get('run') or 'the run'} by {gap:.3g}: not exported")
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(tmp), _extra_files={METADATA: json.dumps(model.metadata(), indent=2)})
    return _readable(out)


def export_program(model: PrototypeModel | Run | str | Path, out: str | Path) -> Path:
    """Write ``model``'s ``forward`` as a ``torch.export`` program (``.pt2``, any batch size), atomically:
    ``torch.export.load(out).module()(images)`` are its logits, with ``protoscope.json`` as an extra file.
    TorchScript is deprecated from torch 2.10 on; this is the format that replaces it."""
    model = _as_model(model).eval()
    size = model.preprocessing.crop_size
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(model.device)
    with torch.no_grad():
        program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},))
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.export.save(program, str(tmp), extra_files={METADATA: json.dumps(model.metadata(), indent=2)})
    return _readable(out)


def _readable(path: Path) -> Path:
    """The permissions a new file gets from the umask (the temporary file it was written to had 0600). The
    umask is read, not set and restored: other threads (the app's sessions) may be creating files meanwhile."""
    umask = 0o022
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                umask = int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    path.chmod(0o666 & ~umask)
    return path


def export_model(model: PrototypeModel | Run | str | Path, out: str | Path) -> Path:
    """``export_program`` for a ``.pt2`` file, ``export_torchscript`` for any other name (``model.pt``)."""
    if Path(out).suffix not in (".pt", ".pt2"):  # TorchScript in a file named .onnx would mislead whoever loads it
        raise ValueError(
            f"{out}: a model is written as .pt (TorchScript) or .pt2 (torch.export), "
            f"not {Path(out).suffix or 'without an extension'}"
        )
    return export_program(model, out) if Path(out).suffix == ".pt2" else export_torchscript(model, out)


def exported_bytes(model: PrototypeModel | Run | str | Path, suffix: str = ".pt") -> bytes:
    """``export_model``'s file as bytes (for a download), written to a temporary folder first."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="protoscope-export-") as folder:
        return export_model(model, Path(folder) / f"model{suffix}").read_bytes()


def _as_model(model: PrototypeModel | Run | str | Path) -> PrototypeModel:
    if isinstance(model, (str, Path)):
        return load_model(model)
    if isinstance(model, Run):
        return model_from_run(model)
    return model


def read_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.jit.ScriptModule, dict]:
    """(the exported module, its ``protoscope.json``): what ``torch.jit.load`` gives, plus the metadata."""
    files = {METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location=device, _extra_files=files)
    return module.eval(), json.loads(files[METADATA] or "{}")

"""The decomposition is exact for every supported family: with randomly initialised weights (no
download), the prototype head's logits on real photos equal the model's own forward."""

from __future__ import annotations

import pytest
import torch

from protolib.backbones import load_backbone
from protolib.data import load_image
from protolib.pipeline import run_decomposition
from tests.helpers import make_nontrivial

FAMILIES = ["resnet18", "densenet121", "efficientnet_b0", "vit_b_16", "timm:resnet10t", "timm:mobilenetv2_050"]
CLASSES = ["n01440764", "n03394916"]


@pytest.mark.parametrize("name", FAMILIES)
def test_prototype_head_reproduces_the_model(name, data_dir, tmp_path):
    torch.manual_seed(0)
    backbone = load_backbone(name, weights="random")
    paths = [sorted((data_dir / "val" / c).iterdir())[i] for c in CLASSES for i in range(3)]
    transform = backbone.preprocessing.transform()
    x = torch.stack([transform(load_image(p)) for p in paths])
    make_nontrivial(backbone, x)
    run = run_decomposition(backbone, data_dir, classes=CLASSES, images_per_class=4, k=3, cache_dir=tmp_path)
    head = run.head(backbone)
    feats, adapter_logits = backbone(x)
    logits, contributions = head(feats)
    # ViT's adapted model pools the patch tokens, so it is compared with the adapter's own head;
    # every CNN is compared with the untouched model's forward
    reference = adapter_logits if name.startswith("vit") else backbone.model(x).detach()
    scale = max(1.0, float(reference.abs().max()))
    assert float((logits - reference).abs().max()) <= 1e-4 * scale
    assert contributions.shape == (6, 2, 3)
    assert torch.allclose(contributions.sum(-1) + head.bias[head.classes], logits[:, head.classes], atol=1e-4 * scale)

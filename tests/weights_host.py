"""A stand-in for a model host, shared by the weights tests (not a test module, so that any of them can import
it): a real resnet18 state dict as torchvision publishes one (seeded random weights calibrated on sample photos),
and a local HTTP server that serves a folder."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import threading
from pathlib import Path

import torch

from protolib.backbones import load_backbone
from protolib.data import load_image
from tests.helpers import make_nontrivial

CLASSES = ["n01440764", "n03394916"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def resnet18_file(data_dir) -> tuple[bytes, str, object]:
    """(a real resnet18 state dict as torch.save writes it, its torchvision-style name, the model): seeded random
    weights with BatchNorm statistics from sample photos and a random head, so that its logits mean something."""
    torch.manual_seed(0)
    backbone = load_backbone("resnet18", weights="random")
    paths = [sorted((data_dir / "train" / c).iterdir())[i] for c in CLASSES for i in range(4)]
    transform = backbone.preprocessing.transform()
    make_nontrivial(backbone, torch.stack([transform(load_image(p)) for p in paths]))
    buffer = io.BytesIO()
    torch.save(backbone.model.state_dict(), buffer)
    data = buffer.getvalue()
    return data, f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth", backbone


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A local HTTP server for ``root`` in a thread: (the server, its base URL)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"

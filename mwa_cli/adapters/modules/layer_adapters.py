"""Containers that attach NKE and AE to one layer of each backbone family (docs/decisions.md).

* ``LayerAdapter``: BEiT-3's extension point, the layer's ``mwa`` child, called as plain code with the
  post-attention state ``h`` and the layer output.
* ``TowerLayerAdapter``: a CLIP/SigLIP tower layer or a BLIP-2 ViT block, through hooks (transformers' layers
  have no extension point): ``h`` read before ``layer_norm2``, NKE and the pair's shared AE added to the output.
* ``QFormerLayerAdapter``: a BLIP-2 Q-Former layer, NKE per stream inside the post-LN residual, one AE for both.
"""

from __future__ import annotations

from torch import Tensor, nn

from mwa_cli.adapters.modules.alignment import AlignmentEnhancer
from mwa_cli.adapters.modules.bottleneck import NKE, Bottleneck


class LayerAdapter(nn.Module):
    """MWA/NKE modules of one layer, called by the layer with its post-attention state ``h`` and output."""

    def __init__(self, nke: NKE | None, ae: AlignmentEnhancer | None):
        super().__init__()
        self.nke = nke
        self.ae = ae

    def attach(self, layer: nn.Module) -> None:
        """Become the layer's ``mwa`` child (EncoderLayer's extension point; the parameter names follow)."""
        layer.add_module("mwa", self)

    def forward(self, h: Tensor, out: Tensor, split: int, drop_path: nn.Module) -> Tensor:
        if self.nke is not None:
            out = out + self.nke(h, split)
        if self.ae is not None:
            out = out + drop_path(self.ae(out))
        return out


class TowerLayerAdapter(nn.Module):
    """NKE of one tower layer (registered here) + a reference to its pair's shared AE (registered on the model)."""

    def __init__(self, tower: str, nke: Bottleneck | None, ae: nn.Module | None):
        super().__init__()
        self.tower = tower
        self.nke = nke
        self._ae = (ae,) if ae is not None else ()  # a tuple: not a sub-module here (it lives in model.mwa_ae)
        self._h: Tensor | None = None

    def attach(self, layer: nn.Module) -> None:
        layer.add_module("mwa", self)
        if self.nke is not None:
            layer.layer_norm2.register_forward_pre_hook(self._capture_hook)
        layer.register_forward_hook(self._output_hook)

    def _capture_hook(self, _module: nn.Module, args: tuple) -> None:
        self._h = args[0]

    def _output_hook(self, _layer: nn.Module, _args: tuple, out):
        hs = out[0] if isinstance(out, tuple) else out
        if self.nke is not None:
            hs = hs + self.nke(self._h)
            self._h = None
        if self._ae:
            ae = self._ae[0]
            hs = hs + (ae(hs) if isinstance(ae, AlignmentEnhancer) else ae(hs, self.tower))
        return (hs, *out[1:]) if isinstance(out, tuple) else hs


class QFormerLayerAdapter(nn.Module):
    """NKE of the query and the text stream of one Q-Former layer, and the layer's AE shared by both."""

    def __init__(self, nke_query: Bottleneck, nke_text: Bottleneck, ae: AlignmentEnhancer | None):
        super().__init__()
        self.nke_query = nke_query
        self.nke_text = nke_text
        self.ae = ae
        self._h: dict[str, Tensor | None] = {"query": None, "text": None}

    def attach(self, layer: nn.Module) -> None:
        layer.add_module("mwa", self)
        for stream, out, nke in (("query", layer.output_query, self.nke_query), ("text", layer.output, self.nke_text)):
            out.register_forward_pre_hook(self._capture(stream))  # Blip2QFormerOutput(ffn_hidden, h)
            out.LayerNorm.register_forward_pre_hook(self._add_nke(stream, nke))
            if self.ae is not None:
                out.register_forward_hook(self._add_ae)

    def _capture(self, stream: str):
        def hook(_module: nn.Module, args: tuple) -> None:
            self._h[stream] = args[1]
        return hook

    def _add_nke(self, stream: str, nke: Bottleneck):
        def hook(_module: nn.Module, args: tuple) -> tuple:
            h, self._h[stream] = self._h[stream], None
            return (args[0] + nke(h), *args[1:])
        return hook

    def _add_ae(self, _module: nn.Module, _args: tuple, y: Tensor) -> Tensor:
        return y + self.ae(y)

"""Class-prompt mask decoder: SAM's ``MaskDecoder`` driven by trainable class tokens, one per output channel.

As in the SAM-Path reference code, for ``C`` output channels ``mask_tokens`` is an ``Embedding(C + 1, 256)``
whose slot 0 is computed and dropped (like SAM's single-mask slot, ``multimask_output=True``), every token
has its own hypernetwork MLP and the IoU head ends in ``Linear(256, C + 1)``. No points, boxes or masks are
given: the sparse prompt is empty and the dense prompt is SAM's learned ``no_mask_embed`` broadcast over the
feature grid. (The reference's ``C`` counts its "unlabeled" channel 0: ``C = k + 1`` for ``k`` classes.)
"""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import nn

#: Channel width of SAM's prompt/decoder embeddings.
PROMPT_DIM = 256


class PromptState(nn.Module):
    """The two pieces of SAM's prompt encoder that a prompt-free decoder uses (frozen).

    Parameter names match segment-anything's ``prompt_encoder.*`` so official weights load into them:
    ``pe_layer.positional_encoding_gaussian_matrix`` (2, 128) and ``no_mask_embed.weight`` (1, 256).
    """

    def __init__(self, grid_size: int, embed_dim: int = PROMPT_DIM) -> None:
        super().__init__()
        self.grid_size = grid_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> torch.Tensor:
        """Image positional encoding ``(1, 256, G, G)``."""
        pe: torch.Tensor = self.pe_layer((self.grid_size, self.grid_size))
        return pe.unsqueeze(0)

    def dense_prompt(self, batch: int) -> torch.Tensor:
        """``no_mask_embed`` broadcast to ``(batch, 256, G, G)``."""
        g = self.grid_size
        return self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, g, g)


class ClassPromptDecoder(MaskDecoder):  # type: ignore[misc]
    """SAM's mask decoder with ``num_channels`` output tokens (plus the dropped slot 0).

    ``forward(embeddings (B, 256, G, G), image_pe (1, 256, G, G), dense (B, 256, G, G))
    -> (logits (B, C, 4G, 4G), iou (B, C))`` with ``C = num_channels``.
    """

    def __init__(self, num_channels: int, transformer_depth: int = 2, mlp_dim: int = 2048,
                 num_heads: int = 8) -> None:
        super().__init__(
            transformer_dim=PROMPT_DIM,
            transformer=TwoWayTransformer(
                depth=transformer_depth, embedding_dim=PROMPT_DIM, mlp_dim=mlp_dim, num_heads=num_heads
            ),
            num_multimask_outputs=num_channels,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        self.num_channels = num_channels

    def forward(  # type: ignore[override]
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        masks, iou = self.predict_masks(image_embeddings, image_pe, dense_prompt)
        return masks[:, 1:], iou[:, 1:]

    def predict_masks(  # type: ignore[override]
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, dense_prompt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's ``predict_masks`` for a batch of images, each with its own token set.

        (SAM's version repeats every image once per prompt set, which would square the batch here.)
        Returns all C + 1 slots: ``(B, C + 1, 4G, 4G)``, ``(B, C + 1)``.
        """
        b = image_embeddings.shape[0]
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(b, -1, -1)
        src = image_embeddings + dense_prompt
        pos_src = image_pe.expand(b, -1, -1, -1)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        src = src.transpose(1, 2).reshape(b, c, h, w)
        upscaled = self.output_upscaling(src)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        _, c2, h2, w2 = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c2, h2 * w2)).reshape(b, -1, h2, w2)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred

"""The Transformer's descendants, each built from the same classes as the translator (§3): the
embeddings (§3.4, §3.5), the encoder stack and the decoder stack with their layers.

    EncoderClassifier    BERT (Devlin et al. 2019): the encoder alone, its [CLS] output (or its mean
                         output) pooled and classified; MaskedLanguageModel is its pre-training (§3.1 of BERT)
    LanguageModel        GPT (Radford et al. 2018): the decoder alone, without cross-attention
    VisionTransformer    ViT (Dosovitskiy et al. 2021): the encoder over an image's patches,
                         with a class token and learned positions
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from aiayn.model.config import BERT_MASKED, POOLINGS, ModelConfig, Pooling
from aiayn.model.transformer import (
    AttentionMaps,
    Decoder,
    DecoderCache,
    Dropout,
    Embeddings,
    Encoder,
    LearnedPositionalEncoding,
    cache_dtype,
    init_weights,
    key_padding_mask,
    padding_mask,
    position_limit,
)


class EncoderStack(nn.Module):
    """Token embeddings and the encoder: what BERT's pre-training and fine-tuning share."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(nn.Embedding(config.vocab_size, config.d_model), config)
        self.encoder = Encoder(config)

    def forward(self, tokens: Tensor, record: AttentionMaps | None = None) -> Tensor:
        """tokens [B, S], right-padded -> [B, S, d]."""
        mask = key_padding_mask(padding_mask(tokens, self.config.pad_id))
        return self.encoder(self.embeddings(tokens), mask, record)


class MaskedLanguageModel(nn.Module):
    """BERT's pre-training: predict the tokens hidden by `mask_tokens` from both sides; the output
    projection is the embedding matrix (§3.4) with a bias."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.body = EncoderStack(config)
        self.output_projection = nn.Linear(config.d_model, config.vocab_size)
        init_weights(self, config.d_model)
        self.output_projection.weight = self.body.embeddings.tokens.weight

    def forward(self, tokens: Tensor, where: Tensor | None = None) -> Tensor:
        """Logits [B, S, vocab], or only at the positions `where` (bool [B, S]) is true: the
        predicted ones: at BERT's 15%, a seventh of the output projection's work."""
        hidden = self.body(tokens)
        return self.output_projection(hidden if where is None else hidden[where])


def mask_tokens(tokens: Tensor, mask_id: int, vocab_size: int, special: Tensor, generator: torch.Generator,
                rate: float = BERT_MASKED, ignore: int = -100) -> tuple[Tensor, Tensor]:
    """BERT's masking: `rate` of the real tokens are to be predicted; of those 80% become [MASK],
    10% a random token, 10% stay. Returns the inputs and the labels (`ignore` where nothing is predicted)."""
    chance = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    chosen = (chance < rate) & ~torch.isin(tokens, special)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, ignore))
    how = torch.rand(tokens.shape, generator=generator, device=tokens.device)
    ordinary = torch.arange(vocab_size, device=tokens.device)
    ordinary = ordinary[~torch.isin(ordinary, special.to(tokens.device))]  # a random token is never a special one
    random_tokens = ordinary[torch.randint(len(ordinary), tokens.shape, generator=generator, device=tokens.device)]
    inputs = torch.where(chosen & (how < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (how >= 0.8) & (how < 0.9), random_tokens, inputs)
    return inputs, labels


class EncoderClassifier(nn.Module):
    """BERT fine-tuned: [CLS] + sentence through the encoder; the sentence's vector through a tanh
    pooler to one score per label. The vector is the [CLS] output (`pooling="cls"`, BERT's), or the
    mean output over the real positions, [CLS] included (`"mean"`): masked-language modelling alone
    puts no loss on the [CLS] output, the mean gives fine-tuning a summary from its first step.
    Its `body` loads from a MaskedLanguageModel's."""

    def __init__(self, config: ModelConfig, n_labels: int, pooling: Pooling = "cls"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r}: one of {', '.join(POOLINGS)}")
        self.config, self.pooling = config, pooling
        self.body = EncoderStack(config)
        self.pooler = nn.Linear(config.d_model, config.d_model)
        self.dropout = Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, n_labels)
        init_weights(self, config.d_model)

    def forward(self, tokens: Tensor, record: AttentionMaps | None = None) -> Tensor:
        """tokens [B, S] beginning with [CLS] (bos_id) -> logits [B, labels]."""
        hidden = self.body(tokens, record)
        if self.pooling == "cls":
            sentence = hidden[:, 0]
        else:
            real = (tokens != self.config.pad_id).unsqueeze(-1).to(hidden.dtype)
            count = real.sum(dim=1).clamp_min(1)  # a row of padding alone stays finite
            sentence = (hidden * real).sum(dim=1) / count
        return self.head(self.dropout(torch.tanh(self.pooler(sentence))))


class LanguageModel(nn.Module):
    """GPT: the decoder stack without cross-attention, the look-ahead mask of §3.2.3, and the
    output projection tied to the embeddings (§3.4). `new_cache` gives the translator's decoding
    cache, so generation costs one step per token."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(nn.Embedding(config.vocab_size, config.d_model), config)
        self.decoder = Decoder(config, cross_attention=False)
        self.output_projection = nn.Linear(config.d_model, config.vocab_size, bias=False)
        init_weights(self, config.d_model)
        self.output_projection.weight = self.embeddings.tokens.weight

    @property
    def position_limit(self) -> int | None:
        return position_limit(self.config)

    def new_cache(self) -> DecoderCache:
        return DecoderCache(cross=[], memory_mask=None, beams=1, dtype=cache_dtype(self.output_projection.weight))

    def forward(self, tokens: Tensor, cache: DecoderCache | None = None, record: AttentionMaps | None = None) -> Tensor:
        """tokens [B, T] -> next-token logits [B, T, vocab]; with a cache, tokens are the new
        positions only. Right padding needs no mask: it comes after every real token."""
        return self.output_projection(self.hidden_states(tokens, cache, record))

    def hidden_states(self, tokens: Tensor, cache: DecoderCache | None = None,
                      record: AttentionMaps | None = None) -> Tensor:
        """The decoder's output [B, T, d], before the output projection (training projects only
        the positions that hold a token: aiayn.training.loss)."""
        x = self.embeddings(tokens, cache.length if cache is not None else 0)
        return self.decoder(x, None, None, cache, record)


@dataclass(frozen=True)
class ImageShape:
    """What a VisionTransformer takes: square images of `size` pixels, `channels` deep, cut into
    square patches of `patch` pixels."""

    size: int = 8
    patch: int = 2
    channels: int = 1

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and v >= 1 for v in (self.size, self.patch, self.channels)) \
                or self.size % self.patch:
            raise ValueError(f"{self}: sizes must be positive integers, the image a whole number of patches")

    @property
    def patches(self) -> int:
        return (self.size // self.patch) ** 2


class VisionTransformer(nn.Module):
    """ViT: the image cut into patches, each flattened and linearly embedded; a learned class
    token before them; learned position embeddings; the encoder stack (pre-norm, as ViT's); the
    class token's output to one score per class."""

    def __init__(self, config: ModelConfig, image: ImageShape, n_classes: int):
        super().__init__()
        if image.size % image.patch:
            raise ValueError(f"patch {image.patch} does not divide the image size {image.size}")
        self.config, self.image = config, image
        self.patch_embedding = nn.Linear(image.patch * image.patch * image.channels, config.d_model)
        self.class_token = nn.Parameter(torch.zeros(1, 1, config.d_model))
        self.positions = LearnedPositionalEncoding(config.d_model, image.patches + 1)
        self.dropout = Dropout(config.dropout)
        self.encoder = Encoder(config)
        self.head = nn.Linear(config.d_model, n_classes)
        init_weights(self, config.d_model)
        nn.init.normal_(self.class_token, std=0.02)

    def patchify(self, images: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, patches, patch * patch * C], row by row."""
        p, b = self.image.patch, images.size(0)
        x = images.unfold(2, p, p).unfold(3, p, p)  # [B, C, H/p, W/p, p, p]
        return x.permute(0, 2, 3, 1, 4, 5).reshape(b, self.image.patches, -1)

    def forward(self, images: Tensor, record: AttentionMaps | None = None) -> Tensor:
        x = self.patch_embedding(self.patchify(images))
        x = torch.cat([self.class_token.expand(x.size(0), -1, -1), x], dim=1)
        x = self.dropout(x + self.positions(x.size(1)))
        everything = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        return self.head(self.encoder(x, key_padding_mask(everything), record)[:, 0])

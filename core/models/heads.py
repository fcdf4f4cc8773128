"""Classification heads shared by every architecture: a linear layer or a small MLP."""
from __future__ import annotations

import torch.nn as nn

HEADS = ("linear", "mlp")
MLP_HIDDEN = 256  # the source notebooks' Dense(256) head


def build_head(in_features: int, num_classes: int, head: str = "linear", *,
               dropout: float = 0.5) -> nn.Module:
    """A head mapping pooled features (N, in_features) to class logits (N, num_classes).

    Args:
        in_features: width of the pooled backbone features (or of an embedding).
        num_classes: number of output classes (>= 2).
        head: "linear" (one Linear) or "mlp" (Linear(256) -> ReLU -> Dropout -> Linear); global
            average pooling comes before either, in the model's ``forward_features``.
        dropout: dropout probability of the mlp head (0 <= p < 1).

    Raises:
        ValueError: an unknown head (the message lists the valid ones) or bad sizes.
    """
    if head not in HEADS:
        raise ValueError(f"invalid head {head!r}; valid: {', '.join(HEADS)}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if head == "linear":
        return nn.Linear(in_features, num_classes)
    return nn.Sequential(
        nn.Linear(in_features, MLP_HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(float(dropout)),
        nn.Linear(MLP_HIDDEN, num_classes),
    )


def build_head_for_embeddings(num_classes: int, head: str = "linear", *, embedding_dim: int = 128,
                              dropout: float = 0.5) -> nn.Module:
    """A head trained on cached embeddings (N, embedding_dim) of a frozen embedder (dlib_face)."""
    return build_head(embedding_dim, num_classes, head, dropout=dropout)

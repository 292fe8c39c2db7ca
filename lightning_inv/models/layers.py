"""Which modules of a network are nonlinearities and norms: one definition for the surgery
(where a blur or a polyphase choice goes) and the nonshiftability probe (what an activity is)."""

from __future__ import annotations

from torch import nn

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.PReLU,
    nn.SELU,
    nn.CELU,
    nn.Tanh,
    nn.Softplus,
)
NORMS: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def is_activation(module: nn.Module) -> bool:
    """A pointwise nonlinearity module: torch's, or one of ``timm.layers``' activation layers
    (timm's fused norm + activation layers hold theirs as the child ``act``)."""
    if isinstance(module, ACTIVATIONS):
        return True
    return type(module).__module__.startswith("timm.layers.activations") and not isinstance(
        module, nn.Identity
    )


def is_norm_or_activation(module: nn.Module) -> bool:
    """A module that may sit between a convolution and the point where its output has passed the
    norm and the nonlinearity: a norm, an activation (timm's fused norm-act layers included),
    dropout or identity."""
    if isinstance(module, NORMS + ACTIVATIONS + (nn.Identity, nn.Dropout, nn.Sigmoid)):
        return True
    name = type(module).__name__.lower()
    return any(tag in name for tag in ("norm", "act", "drop", "relu", "swish", "silu", "gelu"))

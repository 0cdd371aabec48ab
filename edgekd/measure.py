"""Parameter and MAC counts for any callable model (nn.Module, GraphModule, torch.export module)."""
import torch
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model, input_shape) -> int:
    """Multiply-accumulates of one forward pass on one input of shape (C, H, W)."""
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(1, *input_shape))
    return counter.get_total_flops() // 2

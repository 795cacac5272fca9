"""BatchNorm statistics over the ranks: two gloo processes, each with half the batch, give the
outputs, input gradients, parameter gradients and running statistics of one process with all of
it (the full training run is tests/train/test_distributed.py)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from speakerprint.models.layers.norm import (
    MaskedBatchNorm1d,
    MaskedBatchNorm2d,
    SyncMaskedBatchNorm1d,
    SyncMaskedBatchNorm2d,
    convert_sync_batchnorm,
)

CASES = {
    # name: (layer factory, input shape, mask shape or None)
    "masked1d": (lambda: MaskedBatchNorm1d(6), (8, 6, 11), (8, 1, 11)),
    "masked2d": (lambda: MaskedBatchNorm2d(3), (8, 3, 5, 9), (8, 1, 1, 9)),
    "plain1d_vectors": (lambda: nn.BatchNorm1d(6), (8, 6), None),
    "plain2d": (lambda: nn.BatchNorm2d(3), (8, 3, 5, 9), None),
}


def _inputs(name):
    _, shape, mask_shape = CASES[name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen) * 3 + 1
    mask = None
    if mask_shape is not None:
        lengths = torch.randint(3, mask_shape[-1] + 1, (shape[0],), generator=gen)
        mask = (torch.arange(mask_shape[-1]) < lengths[:, None]).reshape(mask_shape)
    upstream = torch.randn(shape, generator=gen)
    return x, mask, upstream


def _run(layer, x, mask, upstream):
    x = x.clone().requires_grad_(True)
    y = layer(x, mask) if mask is not None else layer(x)
    (y * upstream).sum().backward()
    return y.detach(), x.grad, layer.weight.grad, layer.bias.grad


def _rank(rank, port, name, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(1)
        layer = convert_sync_batchnorm(nn.ModuleList([CASES[name][0]()]))[0].train()
        x, mask, upstream = _inputs(name)
        part = slice(rank * 4, rank * 4 + 4)
        y, gx, gw, gb = _run(layer, x[part], None if mask is None else mask[part], upstream[part])
        dist.all_reduce(gw)  # DDP would average; summed here to compare with one process
        dist.all_reduce(gb)
        results[rank] = (y, gx, gw, gb, layer.running_mean.clone(), layer.running_var.clone())
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_with_half_the_batch_each_equal_one_with_all_of_it(name):
    torch.manual_seed(1)
    layer = CASES[name][0]().train()
    x, mask, upstream = _inputs(name)
    y, gx, gw, gb = _run(layer, x, mask, upstream)

    results = mp.Manager().dict()
    mp.spawn(_rank, args=(_free_port(), name, results), nprocs=2, join=True)
    two = [results[0], results[1]]
    torch.testing.assert_close(torch.cat([two[0][0], two[1][0]]), y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([two[0][1], two[1][1]]), gx, rtol=1e-4, atol=1e-5)
    for r in range(2):
        torch.testing.assert_close(two[r][2], gw, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(two[r][3], gb, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(two[r][4], layer.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(two[r][5], layer.running_var, rtol=1e-5, atol=1e-6)


def test_outside_torchrun_the_converted_layer_is_the_layer_it_was():
    for name in sorted(CASES):
        torch.manual_seed(1)
        plain = CASES[name][0]().train()
        torch.manual_seed(1)
        synced = convert_sync_batchnorm(nn.ModuleList([CASES[name][0]()]))[0].train()
        assert isinstance(synced, (SyncMaskedBatchNorm1d, SyncMaskedBatchNorm2d))
        x, mask, upstream = _inputs(name)
        for a, b in zip(_run(plain, x, mask, upstream), _run(synced, x, mask, upstream)):
            torch.testing.assert_close(a, b)
        assert plain.state_dict().keys() == synced.state_dict().keys()


def test_conversion_keeps_the_parameters_and_refuses_unknown_norms():
    net = nn.Sequential(nn.Conv1d(2, 4, 1), nn.BatchNorm1d(4))
    weight = net[1].weight
    convert_sync_batchnorm(net)
    assert net[1].weight is weight  # the optimiser's references stay valid
    with pytest.raises(TypeError, match="BatchNorm3d"):
        convert_sync_batchnorm(nn.Sequential(nn.BatchNorm3d(2)))

"""Batch normalisation whose training statistics ignore padded frames: 1-D (B, C, T) and 2-D
(B, C, F, T), each with a form whose statistics span every rank under torchrun."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from speakerprint.utils.precision import upcast


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over (B, C, T) that takes batch statistics from valid frames only.

    With plain BatchNorm1d the zeros of padded frames enter the batch mean and variance during
    training, so the running statistics (and hence every later embedding) depend on how a batch was
    padded. Same parameters and buffers as ``nn.BatchNorm1d``: state dicts are interchangeable.
    When running statistics are used (eval mode) the mask changes nothing. Scriptable with
    ``torch.jit.script``, as are its subclasses.

    >>> bn = MaskedBatchNorm1d(4)
    >>> x, mask = torch.randn(2, 4, 10), torch.ones(2, 1, 10, dtype=torch.bool)
    >>> bn(x, mask).shape
    torch.Size([2, 4, 10])
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, C, T); mask: (B, 1, T) bool, True at valid frames, or None (all valid)."""
        return self._masked_batch_norm(x, mask)

    def _masked_batch_norm(self, x: Tensor, mask: Tensor | None) -> Tensor:
        # The body of forward, a method of its own so that subclasses' forwards call it: TorchScript
        # has no super().
        use_batch_stats = self.training or not self.track_running_stats
        if mask is None or not use_batch_stats:
            return self._batch_norm(x)

        # Statistics in fp32 whatever the autocast dtype: sums over B*T frames lose bits in bf16.
        x32 = upcast(x)
        weight = mask.to(x32.dtype)  # (B, 1, T)
        count = weight.sum()
        mean = (x32 * weight).sum(dim=(0, 2)) / count  # (C,)
        centred = x32 - mean[:, None]
        var = (centred.square() * weight).sum(dim=(0, 2)) / count  # biased, as BatchNorm normalises

        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.detach())

        return self._normalise(centred, var).to(x.dtype)

    def _normalise(self, centred: Tensor, var: Tensor) -> Tensor:
        """(x - mean) / sqrt(var + eps), then the affine map: the batch statistics' last step."""
        y = centred * torch.rsqrt(var[:, None] + self.eps)
        gamma, beta = self.weight, self.bias  # locals: TorchScript refines only those from None
        if gamma is not None and beta is not None:  # affine
            y = y * gamma[:, None] + beta[:, None]
        return y

    def _batch_norm(self, x: Tensor) -> Tensor:
        """``nn.BatchNorm1d.forward``, step for step (TorchScript cannot call it via super())."""
        self._check_input_dim(x)
        if self.momentum is None:
            exponential_average_factor = 0.0
        else:
            exponential_average_factor = self.momentum
        if self.training and self.track_running_stats:
            if self.num_batches_tracked is not None:  # statically None without running stats
                self.num_batches_tracked.add_(1)
                if self.momentum is None:  # cumulative moving average
                    exponential_average_factor = 1.0 / float(self.num_batches_tracked)
                else:
                    exponential_average_factor = self.momentum
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean if track else None,
            self.running_var if track else None,
            self.weight,
            self.bias,
            self.training or (self.running_mean is None and self.running_var is None),
            exponential_average_factor,
            self.eps,
        )

    def _update_running_stats(self, mean: Tensor, var: Tensor, count: Tensor) -> None:
        running_mean, running_var = self.running_mean, self.running_var
        num_batches_tracked = self.num_batches_tracked
        if running_mean is None or running_var is None or num_batches_tracked is None:
            return  # no running statistics to update (never so when called from forward)
        with torch.no_grad():  # a block, not a decorator: TorchScript compiles only the former
            num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as in nn.BatchNorm1d
                momentum = 1.0 / float(num_batches_tracked)
            else:
                momentum = self.momentum
            unbiased_var = var * count / (count - 1).clamp(min=1)
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(unbiased_var, momentum)


def _world_size() -> int:
    """The number of processes training together, 1 outside torchrun."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks, differentiable: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # noqa: D102
        import torch.distributed as dist

        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        import torch.distributed as dist

        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class _GlobalBatchStats:
    """Mixin: batch statistics over every rank's valid frames, as one process would see them.

    Two differentiable all-reduces per call (the sums and the count, then the centred squares),
    so the variance is computed as a single process computes it (no E[x^2] - E[x]^2
    cancellation), and the gradients flow to every rank's frames: with the same global batch,
    N processes train the model of one. Outside training or outside torchrun it is the layer it
    was made from.
    """

    def _masked_batch_norm(self, x: Tensor, mask: Tensor | None) -> Tensor:
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats or _world_size() == 1:
            return super()._masked_batch_norm(x, mask)
        x32 = upcast(x)
        weight = mask.to(x32.dtype) if mask is not None else x32.new_ones(x.shape[0], 1, x.shape[2])
        sums = torch.cat([(x32 * weight).sum(dim=(0, 2)), weight.sum().reshape(1)])
        sums = _AllReduceSum.apply(sums)
        count = sums[-1]
        mean = sums[:-1] / count
        centred = x32 - mean[:, None]
        var = _AllReduceSum.apply((centred.square() * weight).sum(dim=(0, 2))) / count
        if self.training and self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.detach())
        return self._normalise(centred, var).to(x.dtype)


class SyncMaskedBatchNorm1d(_GlobalBatchStats, MaskedBatchNorm1d):
    """:class:`MaskedBatchNorm1d` with statistics over all ranks; also takes (B, C) input.

    Made by :func:`convert_sync_batchnorm`, for training under torchrun only (not scriptable).
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.dim() == 2:  # (B, C): a batch of vectors is a batch of one-frame sequences
            return self._masked_batch_norm(x[:, :, None], None)[:, :, 0]
        return self._masked_batch_norm(x, mask)


class MaskedBatchNorm2d(MaskedBatchNorm1d):
    """BatchNorm over (B, C, F, T) whose batch statistics skip padded time steps.

    The map is viewed as (B, C, F * T) and normalised by :class:`MaskedBatchNorm1d`, which has the
    same parameters and buffers as ``nn.BatchNorm2d``: state dicts are interchangeable.

    >>> import torch
    >>> bn = MaskedBatchNorm2d(4)
    >>> x, mask = torch.randn(2, 4, 10, 7), torch.ones(2, 1, 1, 7, dtype=torch.bool)
    >>> bn(x, mask).shape
    torch.Size([2, 4, 10, 7])
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x: (B, C, F, T); mask: (B, 1, 1, T) bool or None (all valid) -> (B, C, F, T)."""
        batch, channels, freq, frames = x.shape
        flat_mask: Tensor | None = None
        if mask is not None:
            flat_mask = mask.expand(batch, 1, freq, frames).reshape(batch, 1, freq * frames)
        y = self._masked_batch_norm(x.reshape(batch, channels, freq * frames), flat_mask)
        return y.reshape(batch, channels, freq, frames)


class SyncMaskedBatchNorm2d(_GlobalBatchStats, MaskedBatchNorm2d):
    """:class:`MaskedBatchNorm2d` with statistics over all ranks (see ``convert_sync_batchnorm``)."""


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make every BatchNorm of ``module`` (masked or not, 1-D or 2-D) use global statistics.

    In place, by changing each layer's class: parameters, buffers, hooks and the optimiser's
    references stay as they are, and state dicts keep their keys, so checkpoints and bundles are
    unchanged. PyTorch's ``nn.SyncBatchNorm`` is not used: it runs on CUDA only (this runs on
    gloo too) and knows nothing of padded frames.

    >>> net = nn.Sequential(nn.Conv1d(2, 4, 1), nn.BatchNorm1d(4))
    >>> type(convert_sync_batchnorm(net)[1]).__name__
    'SyncMaskedBatchNorm1d'
    """
    for layer in module.modules():
        if isinstance(layer, _GlobalBatchStats):
            continue
        if isinstance(layer, MaskedBatchNorm2d) or type(layer) is nn.BatchNorm2d:
            layer.__class__ = SyncMaskedBatchNorm2d
        elif isinstance(layer, MaskedBatchNorm1d) or type(layer) is nn.BatchNorm1d:
            layer.__class__ = SyncMaskedBatchNorm1d
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            raise TypeError(f"no synchronised form of {type(layer).__name__}")
    return module

"""Everything torch-specific of data-parallel training (torch.distributed and Horovod), in one
place, like ``_jax.py`` for JAX: gradient averaging with one flat allreduce per step, broadcasts of
Keras variables, and sums of metric state. ``CommunicationBackend`` (``backends.py``) supplies the
collectives themselves.
"""

from __future__ import annotations

from deepspark.distributed.backends import CommunicationBackend


def broadcast_variables(variables, backend: CommunicationBackend, *, root: int = 0) -> None:
    """Overwrite Keras ``variables`` with ``root``'s values (one broadcast per dtype)."""
    import torch

    groups: dict = {}
    for variable in variables:
        groups.setdefault(variable.value.dtype, []).append(variable)
    for dtype, group in groups.items():
        flat = torch.cat([variable.value.detach().reshape(-1) for variable in group])
        backend.broadcast_(flat, root=root, name=f"broadcast.{dtype}.{flat.numel()}")
        offset = 0
        for variable in group:
            count = variable.value.numel()
            variable.assign(flat[offset : offset + count].view_as(variable.value))
            offset += count


def allreduce_metric_state(model, backend: CommunicationBackend) -> None:
    """Sum the state of every metric (totals, counts, confusion counts) over ranks, so the
    metric results become those of the union of all ranks' rows.

    Sums and counts are reduced, never means: with shards of different sizes the result is the
    metric of the whole data set, not a mean of means. Exact for every Keras metric whose state
    adds up across rows (means, RMSE, accuracy, AUC, precision/recall...).
    """
    import torch

    variables = model.metrics_variables
    if not variables:
        return
    flat = torch.cat(
        [variable.value.detach().reshape(-1).to(torch.float64) for variable in variables]
    )
    backend.allreduce_sum_(flat, name="metrics")
    offset = 0
    for variable in variables:
        count = variable.value.numel()
        variable.assign(
            flat[offset : offset + count].view_as(variable.value).to(variable.value.dtype)
        )
        offset += count


class _DistributedApply:
    """Methods mixed into the wrapped optimizer's class on torch (ahead of its own ``apply``)."""

    _deepspark_distributed = True
    # DistributedNanGuard reads the flag reduced with the gradients.
    _deepspark_reduces_loss_flag = True
    _deepspark_loss_flag = None

    def scale_loss(self, loss):
        # Keras' trainer hands every step's loss through here before backward(): remember
        # whether it is finite (a tensor, no device sync) to reduce it with the gradients.
        import torch

        self._deepspark_loss_flag = torch.isfinite(loss.detach()).logical_not().reshape(1)
        return super().scale_loss(loss)

    def apply(self, grads, trainable_variables=None):
        flag, self._deepspark_loss_flag = self._deepspark_loss_flag, None
        grads, nonfinite = average_gradients(list(grads), self._deepspark_backend, loss_flag=flag)
        # Reduced with the gradients, so every rank holds the same value and a NaN guard stops
        # all ranks at the same step (a rank stopping alone would leave the others waiting).
        self.nonfinite_loss_on_any_rank = nonfinite
        return super().apply(grads, trainable_variables)


def average_gradients(grads: list, backend: CommunicationBackend, *, loss_flag=None):
    """Average gradients over ranks with one allreduce of one flat buffer.

    ``None`` gradients (variables the loss does not reach) stay ``None``; every rank has the same
    model, so the same ones are ``None`` everywhere.

    Args:
        grads: This rank's gradients (torch tensors or ``None``).
        backend: The process group.
        loss_flag: Optional 1-element tensor, non-zero when this rank's loss is not finite;
            summed in the same allreduce.

    Returns:
        The averaged gradients, and a 1-element tensor, positive when any rank flagged its loss
        (``None`` without ``loss_flag``).
    """
    import torch

    present = [index for index, grad in enumerate(grads) if grad is not None]
    if not present:
        return grads, None
    parts = [grads[index].reshape(-1) for index in present]
    if loss_flag is not None:
        parts.append(loss_flag.to(parts[0].dtype))
    flat = torch.cat(parts)
    backend.allreduce_sum_(flat, name="gradients")
    if backend.size > 1:  # one pass less over every gradient in a world of one
        flat.div_(backend.size)
    pieces = flat.split([part.numel() for part in parts])
    averaged = list(grads)
    for index, piece in zip(present, pieces, strict=False):
        averaged[index] = piece.view(grads[index].shape)
    return averaged, pieces[-1] if loss_flag is not None else None

"""Figures logged with a run."""

from __future__ import annotations


def loss_curve_figure(history: list[dict[str, float]]):
    """Train and validation loss per epoch (log scale when the loss spans decades)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = [entry["epoch"] + 1 for entry in history]
    figure, axes = pyplot.subplots(figsize=(6, 4))
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        values = [entry.get(key) for entry in history]
        if any(value is not None for value in values):
            axes.plot(epochs, values, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    losses = [entry[key] for entry in history for key in ("train_loss", "val_loss") if key in entry]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 100:
        axes.set_yscale("log")
    axes.legend()
    axes.set_title("Loss per epoch")
    figure.tight_layout()
    return figure

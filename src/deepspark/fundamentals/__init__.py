"""NumPy reference implementations of deep-learning fundamentals, and lessons that use them.

Nothing here imports Keras or torch: activations, losses, optimizers, a tiny MLP, convolution and
pooling are written out in NumPy so each formula can be read, plotted and checked against Keras 3
in the tests. Plots (in :func:`run_lesson`) use matplotlib, loaded only when a lesson draws.
"""

from __future__ import annotations

from deepspark.fundamentals.activations import (
    ACTIVATIONS,
    elu,
    elu_derivative,
    get_activation,
    leaky_relu,
    leaky_relu_derivative,
    prelu,
    prelu_alpha_gradient,
    prelu_derivative,
    relu,
    relu_derivative,
    sigmoid,
    sigmoid_derivative,
    tanh,
    tanh_derivative,
)
from deepspark.fundamentals.convolutions import (
    CLASSIC_KERNELS,
    average_pool2d,
    conv2d,
    conv_output_size,
    conv_parameter_count,
    dense_parameter_count,
    max_pool2d,
)
from deepspark.fundamentals.lessons import TOPICS, run_lesson
from deepspark.fundamentals.losses import (
    absolute_error,
    absolute_error_gradient,
    error,
    error_gradient,
    mae,
    mse,
    mse_gradient,
    rmse,
    squared_error,
    squared_error_gradient,
    sse,
)
from deepspark.fundamentals.mlp import (
    fit_mlp,
    gradient_check,
    init_mlp,
    mlp_forward,
    mlp_loss_and_gradients,
    mlp_predict,
    numerical_gradient,
)
from deepspark.fundamentals.optimizers import (
    adam_step,
    init_state,
    minimize,
    momentum_step,
    nesterov_step,
    sgd_step,
)

__all__ = [
    "ACTIVATIONS",
    "CLASSIC_KERNELS",
    "TOPICS",
    "absolute_error",
    "absolute_error_gradient",
    "adam_step",
    "average_pool2d",
    "conv2d",
    "conv_output_size",
    "conv_parameter_count",
    "dense_parameter_count",
    "elu",
    "elu_derivative",
    "error",
    "error_gradient",
    "fit_mlp",
    "get_activation",
    "gradient_check",
    "init_mlp",
    "init_state",
    "leaky_relu",
    "leaky_relu_derivative",
    "mae",
    "max_pool2d",
    "minimize",
    "mlp_forward",
    "mlp_loss_and_gradients",
    "mlp_predict",
    "momentum_step",
    "mse",
    "mse_gradient",
    "nesterov_step",
    "numerical_gradient",
    "prelu",
    "prelu_alpha_gradient",
    "prelu_derivative",
    "relu",
    "relu_derivative",
    "rmse",
    "run_lesson",
    "sgd_step",
    "sigmoid",
    "sigmoid_derivative",
    "squared_error",
    "squared_error_gradient",
    "sse",
    "tanh",
    "tanh_derivative",
]

"""What a training is compiled with: the optimizer, the loss, the metrics and the callbacks, by name.

The Estimator's `model_fn` chose the loss, the train op and the metrics, and
its hooks ran the user's code. Here, as keras-hub's `compile(optimizer="auto",
loss="auto", metrics="auto")`: the problem gives the defaults (Adam, its loss,
its metrics), and TrainEstimator's parameters override any of them with a
Keras name (`adamw`, `huber`, `["mape"]`) or a user's `module:function` (a
function, or a Keras-serializable class). A builder that returns a model it
compiled itself keeps its own optimizer, loss and metrics. Callbacks are a
user's `module:function` returning a list of Keras callbacks.

Standard library at import: the names are checked on Luigi's scheduling path,
before any work. Keras' names are listed here (a test compares them with the
installed Keras); what only running can tell (a loss's output shape, the
callbacks a function returns, a compiled builder's settings) is checked once
per version of the code, before any work, by training/builder_check.py (which
no stage's code identity holds). Keras is imported by the functions that build
the objects.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline import builders, problems
from pipeline.core import values

# Keras 3.15's names (keras.optimizers.get, keras.losses.get, keras.metrics.get), but the
# abstract bases and the metrics that need arguments (io_u, precision_at_recall, ...).
OPTIMIZERS = (
    "adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "ftrl", "lion", "muon", "nadam", "rmsprop",
    "schedulefreeadamw", "sgd",
)  # fmt: skip
LOSSES = (
    "bce", "binary_crossentropy", "binary_focal_crossentropy", "categorical_crossentropy",
    "categorical_focal_crossentropy", "categorical_hinge", "circle", "cosine_similarity", "ctc", "dice", "hinge",
    "huber", "kl_divergence", "kld", "log_cosh", "mae", "mape", "mean_absolute_error",
    "mean_absolute_percentage_error", "mean_squared_error", "mean_squared_logarithmic_error", "mse", "msle",
    "poisson", "sparse_categorical_crossentropy", "squared_hinge", "tversky",
)  # fmt: skip
METRICS = (
    "accuracy", "auc", "bce", "binary_accuracy", "binary_crossentropy", "binary_io_u", "categorical_accuracy",
    "categorical_crossentropy", "categorical_hinge", "concordance_correlation", "cosine_similarity", "f1_score",
    "f_beta_score", "false_negatives", "false_positives", "hinge", "kl_divergence", "log_cosh_error", "mae",
    "mape", "mean_absolute_error", "mean_absolute_percentage_error", "mean_squared_error",
    "mean_squared_logarithmic_error", "mse", "msle", "pearson_correlation", "poisson", "precision", "r2_score",
    "recall", "root_mean_squared_error", "sparse_categorical_accuracy", "sparse_categorical_crossentropy",
    "sparse_top_k_categorical_accuracy", "squared_hinge", "top_k_categorical_accuracy", "true_negatives",
    "true_positives",
)  # fmt: skip
DEFAULT_OPTIMIZER = "adam"
# What a callbacks function may take (by name): the run it is called for.
CALLBACK_ARGUMENTS = ("model_dir", "max_steps", "checkpoint_steps", "problem")
FLAG = "--TrainEstimator-"
COMPILE_FIELDS = ("optimizer", "optimizer_params", "loss", "metrics")  # what a network that compiles itself sets


def _named(value: str, names: Sequence[str], what: str, flag: str, user: bool) -> str:
    """`value` if it is one of Keras' `names` (or, where `user`, a module:function found); else a ValueError."""
    if user and ":" in value:
        builders.locate(value, flag)
        return value
    if value in names:
        return value
    near = difflib.get_close_matches(value.lower(), names, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]}?)" if near else ""
    own = " or module:function for one of your own" if user else ""
    raise ValueError(
        f"{flag} {value}: not a Keras {what}{hint}. Expected auto, one of Keras' names ({', '.join(names)}){own}."
    )


def optimizer_name(value: str) -> str:
    """The optimizer `--TrainEstimator-optimizer` names: auto is Adam (every problem's)."""
    return DEFAULT_OPTIMIZER if value == "auto" else _named(value, OPTIMIZERS, "optimizer", FLAG + "optimizer", False)


def optimizer_arguments(value: Mapping[str, Any]) -> dict[str, Any]:
    """`--TrainEstimator-optimizer-params`: the optimizer's keyword arguments but those the pipeline sets."""
    for name in ("learning_rate", "name"):
        if name in value:
            instead = " (use --TrainEstimator-learning-rate)" if name == "learning_rate" else ""
            raise ValueError(f"{FLAG}optimizer-params sets {name!r}, which the pipeline sets itself{instead}.")
    return dict(sorted(values.normalise(dict(value)).items()))


def loss_name(value: str, problem: problems.Problem) -> str:
    """The loss `--TrainEstimator-loss` names: auto is the problem's (mse; sparse_categorical_crossentropy)."""
    return problem.default_loss if value == "auto" else _named(value, LOSSES, "loss", FLAG + "loss", True)


def metric_names(value: Sequence[str], problem: problems.Problem) -> tuple[str, ...]:
    """The metrics `--TrainEstimator-metrics` adds beside the problem's own (which are always computed)."""
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f'{FLAG}metrics must be a JSON list of names, e.g. ["mape"]. Received: {list(value)}')
        name = _named(item, METRICS, "metric", FLAG + "metrics", True)
        if name not in problem.metric_names and name not in names:
            names.append(name)
    return tuple(names)


def callbacks_name(value: str) -> str:
    """`--TrainEstimator-callbacks`: empty, or the module:function that returns the callbacks."""
    if value:
        if ":" not in value:
            raise ValueError(f"{FLAG}callbacks must be module:function, e.g. my_callbacks:make. Received: {value!r}")
        builders.locate(value, FLAG + "callbacks")
    return value


# --- the Keras objects (these import Keras) ------------------------------------------------


def instance(spec: str) -> Any:
    """The user's loss or metric `spec` names: their function, or an instance of their class (made with no
    arguments)."""
    value = builders.import_user(spec)
    return value() if inspect.isclass(value) else value


def learning_rate(config: Any) -> Any:
    """The learning rate, or its schedule: linear warm-up over `warmup_steps`, then cosine decay or constant."""
    import keras

    if not config.lr_decay and not config.warmup_steps:
        return config.learning_rate
    if not config.warmup_steps:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, config.max_steps)
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        config.max_steps - config.warmup_steps,
        alpha=0.0 if config.lr_decay else 1.0,  # 1: the rate stays at its target after the warm-up
        warmup_target=config.learning_rate,
        warmup_steps=config.warmup_steps,
    )


def optimizer(config: Any) -> Any:
    """The optimizer `config.optimizer` names, at `learning_rate(config)` with `config.optimizer_params`."""
    import keras

    kind = type(keras.optimizers.get(config.optimizer))
    # Named: the same name in every run, so checkpoints are byte-identical across runs.
    return kind(learning_rate=learning_rate(config), name=config.optimizer, **values.normalise(config.optimizer_params))


def loss(config: Any) -> Any:
    """The loss: the problem's own object for its default, else Keras' or the user's."""
    import keras

    problem = problems.get(config.problem)
    if config.loss == problem.default_loss:
        return problem.loss()
    return instance(config.loss) if ":" in config.loss else keras.losses.get(config.loss)


def metrics(config: Any) -> list[Any]:
    """The problem's streaming metrics, then the chosen ones (Keras names as strings: logged by that name)."""
    chosen = [instance(name) if ":" in name else name for name in config.metrics]
    return [*problems.get(config.problem).metrics(), *chosen]


def compile_model(model: Any, config: Any, steps_per_execution: int) -> Any:
    """Compile `model` as `config` says, or keep what a builder that compiled it chose (only the speed is set)."""
    if model.compiled:
        model.steps_per_execution = steps_per_execution
        return model
    model.compile(
        optimizer=optimizer(config),
        loss=loss(config),
        metrics=metrics(config),
        steps_per_execution=steps_per_execution,
    )
    return model


def callbacks(config: Any, model_dir: Any) -> list[Any]:
    """The user's callbacks (`config.callbacks`), called with the arguments of CALLBACK_ARGUMENTS it takes."""
    if not config.callbacks:
        return []
    import keras

    function = builders.import_user(config.callbacks)
    offered = {
        "model_dir": str(model_dir),
        "max_steps": config.max_steps,
        "checkpoint_steps": config.checkpoint_steps,
        "problem": config.problem,
    }
    parameters = inspect.signature(function).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    made = function(**{name: value for name, value in offered.items() if takes_any or name in parameters})
    if not isinstance(made, (list, tuple)) or not all(isinstance(c, keras.callbacks.Callback) for c in made):
        raise ValueError(
            f"{FLAG}callbacks {config.callbacks}: returned {type(made).__name__} {made!r:.80}, not a list of "
            "keras.callbacks.Callback."
        )
    return list(made)

"""Errors a training run can end with; `kind` is a stable short name stored with the failed job."""

from __future__ import annotations


class TrainingError(Exception):
    """Base class: a run that cannot start or cannot go on, with a message meant for the user."""

    kind = "training_error"


class JobSpecError(TrainingError):
    """The job spec is malformed or asks for something this runner does not do."""

    kind = "bad_job_spec"


class ModelLoadError(TrainingError):
    """The model or tokenizer cannot be found or loaded."""

    kind = "model_load"


class DatasetError(TrainingError):
    """The dataset file is missing, too large, or has no usable examples."""

    kind = "dataset"


class UnsupportedOnDevice(TrainingError):
    """A requested feature (optimizer, precision, attention kernel) cannot run on this device."""

    kind = "unsupported_on_device"

    def __init__(self, feature: str, device: str, hint: str = "") -> None:
        self.feature = feature
        self.device = device
        message = f"{feature} is not supported on {device}"
        super().__init__(f"{message}; {hint}" if hint else message)


class NanLossError(TrainingError):
    """The loss became NaN or infinite: the run diverged."""

    kind = "nan_loss"

    def __init__(self, step: int, value: float) -> None:
        self.step = step
        self.value = value
        super().__init__(
            f"loss became {value} at step {step}: training diverged "
            "(lower the learning rate, enable gradient clipping, or check the data)"
        )


class OutOfMemory(TrainingError):
    """The device ran out of memory."""

    kind = "out_of_memory"

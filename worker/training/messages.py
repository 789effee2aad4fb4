"""Everything sent up the pipes of a job: rank → launcher → worker, or child → worker.

One tagged union, `PipeMessage`: a sender builds a member and sends `encode(message)` (plain
JSON types, so any pickling pipe carries it); the reader turns what it received back into the
member with `decode`, which validates it. A new kind of message is a new member here.

During a run the trainer sends `phase`, `progress` and `eval` (a point of the eval curve,
`app.evals.points.EvalPoint`, which the worker stores); it ends with one `result` (rank 0, or the
only child), `done` (another rank that finished) or `error`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from app.evals.points import EvalPoint
from app.jobs.actuals import JobActuals

PhaseInfo = dict[str, str | int | float | bool | None]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProgressEvent(_Message):
    """Where a run stands after an optimizer step."""

    type: Literal["progress"] = "progress"
    step: int
    total_steps: int
    loss: float
    tokens: int = Field(description="real (non-pad) tokens trained on so far")
    tokens_per_s: float = Field(description="over the training loop so far")
    elapsed_s: float = Field(description="since the job started (the billing clock)")
    accrued_cost_usd: float


class PhaseEvent(_Message):
    """A step of the recipe begins: loading_model, preparing_data, training, evaluating, saving."""

    type: Literal["phase"] = "phase"
    phase: str
    info: PhaseInfo = Field(default_factory=dict)


class ResultMessage(_Message):
    """The run's end with its metered actuals (the only child's, or rank 0's for the job)."""

    type: Literal["result"] = "result"
    actuals: JobActuals


class DoneMessage(_Message):
    """A rank other than 0 finished its part; rank 0 reports for the job."""

    type: Literal["done"] = "done"


class ErrorMessage(_Message):
    """The run failed: why (`kind`: a TrainingError kind, out_of_memory, internal, rank_died,
    launch_failed), the message, the traceback of an unforeseen error, the rank that failed."""

    type: Literal["error"] = "error"
    kind: str
    message: str
    traceback: str | None = None
    rank: int | None = None


PipeMessage = Annotated[
    ProgressEvent | PhaseEvent | EvalPoint | ResultMessage | DoneMessage | ErrorMessage,
    Field(discriminator="type"),
]
_PIPE: TypeAdapter[PipeMessage] = TypeAdapter(PipeMessage)


def encode(message: PipeMessage) -> dict[str, Any]:
    """What goes into the pipe: the message as JSON types."""
    return message.model_dump(mode="json")


def decode(raw: object) -> PipeMessage:
    """The message read from a pipe; pydantic's ValidationError when it is none of the union."""
    return _PIPE.validate_python(raw)

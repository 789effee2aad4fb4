"""tunecost: estimate, run and meter LLM fine-tunes."""

from app.kit.quiet import silence_false_warnings

silence_false_warnings()

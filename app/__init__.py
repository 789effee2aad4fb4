"""tunecost: estimate, run and meter LLM fine-tunes."""

from app.quiet import silence_false_warnings

silence_false_warnings()

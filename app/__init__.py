"""tunecost: estimate, run and meter LLM fine-tunes."""

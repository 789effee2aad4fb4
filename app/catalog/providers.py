"""Display names of the catalog's providers, by provider id."""

from __future__ import annotations

# FOCUS wants provider display names, not ids (ProviderName: "the name of the entity that made
# the resources or services available for purchase").
PROVIDER_NAMES = {
    "aws": "AWS",
    "gcp": "Google Cloud",
    "azure": "Microsoft Azure",
    "lambda": "Lambda",
    "runpod": "RunPod",
}

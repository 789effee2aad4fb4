"""The network half of a price refresh: download one provider's whole price list as one document.

Kept thin and apart from the parsers (app/catalog/prices/importers), which never touch the network:
paged answers are merged into one page whose next-page marker is empty, so the parser sees the
complete list or refuses it as partial. Not exercised by the tests (this machine is offline).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx

TIMEOUT_S = 120.0  # the EC2 region offer files are tens of MB
# Public endpoints, each documented where its importer's docstring cites the format.
AWS_OFFER_URL = (
    "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/{region}/index.json"
)
AZURE_URL = "https://prices.azure.com/api/retail/prices"
AZURE_FILTER = "serviceName eq 'Virtual Machines' and priceType ne 'DevTestConsumption'"
GCP_COMPUTE_SERVICE = "6F81-5844-456A"  # Compute Engine's service id in the Billing Catalog
GCP_URL = f"https://cloudbilling.googleapis.com/v1/services/{GCP_COMPUTE_SERVICE}/skus"
LAMBDA_URL = "https://cloud.lambda.ai/api/v1/instance-types"
MAX_PAGES = 2000  # a runaway paging loop stops here rather than never


def fetch_aws(region: str = "us-east-1") -> tuple[Any, str]:
    """The EC2 offer file of one region, and its URL."""
    url = AWS_OFFER_URL.format(region=region)
    return httpx.get(url, timeout=TIMEOUT_S).raise_for_status().json(), url


def fetch_azure() -> tuple[Any, str]:
    """Every virtual-machine price page merged into one, and the first page's URL."""
    items: list[Any] = []
    page: dict[str, Any] = {}
    url: str | None = AZURE_URL
    params: dict[str, str] | None = {"$filter": AZURE_FILTER}
    for _ in range(MAX_PAGES):
        if not url:
            break
        page = httpx.get(url, params=params, timeout=TIMEOUT_S).raise_for_status().json()
        items.extend(page.get("Items", []))
        url, params = page.get("NextPageLink"), None
    else:
        raise RuntimeError(f"Azure Retail Prices: more than {MAX_PAGES} pages")
    return {**page, "Items": items, "NextPageLink": None, "Count": len(items)}, AZURE_URL


def fetch_gcp() -> tuple[Any, str]:
    """Every Compute Engine SKU merged into one page (needs TUNECOST_GCP_API_KEY)."""
    key = os.environ.get("TUNECOST_GCP_API_KEY")
    if not key:
        raise RuntimeError("the Cloud Billing Catalog API needs an API key: TUNECOST_GCP_API_KEY")
    skus: list[Any] = []
    token = ""
    for _ in range(MAX_PAGES):
        params = {"key": key, "pageToken": token} if token else {"key": key}
        page = httpx.get(GCP_URL, params=params, timeout=TIMEOUT_S).raise_for_status().json()
        skus.extend(page.get("skus", []))
        token = page.get("nextPageToken") or ""
        if not token:
            return {"skus": skus, "nextPageToken": ""}, GCP_URL
    raise RuntimeError(f"Cloud Billing Catalog: more than {MAX_PAGES} pages")


def fetch_lambda() -> tuple[Any, str]:
    """Lambda's instance types (needs TUNECOST_LAMBDA_API_KEY)."""
    key = os.environ.get("TUNECOST_LAMBDA_API_KEY")
    if not key:
        raise RuntimeError("the Lambda Cloud API needs an API key: TUNECOST_LAMBDA_API_KEY")
    answer = httpx.get(LAMBDA_URL, auth=(key, ""), timeout=TIMEOUT_S).raise_for_status()
    return answer.json(), LAMBDA_URL


FETCHERS: dict[str, Callable[[], tuple[Any, str]]] = {
    "aws": fetch_aws,
    "azure": fetch_azure,
    "gcp": fetch_gcp,
    "lambda": fetch_lambda,
}

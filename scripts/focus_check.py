"""Validate a FOCUS export with the FinOps Foundation's `focus-validator`; fail on any new finding.

`make focus-check` installs the validator in its own virtual environment (it pins old numpy and
pandas), has a real CPU job and a real cloud-billed job exported to CSV (the API's export) and
delivered as Parquet (the scheduled delivery), then runs this script on each file. The
validator's newest rule set is FOCUS 1.0; the export is FOCUS 1.2. Every rule it still fails is
listed in KNOWN_LIMITATIONS with the reason: a rule failing that is not listed (or a listed one
that starts passing) makes the check fail, so the list stays true.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow.parquet as pq  # the project's venv runs this script (`$(PY)` in the Makefile)

VALIDATE_VERSION = "1.0"  # the newest FOCUS version focus-validator 1.0.0 has rules for
# Rule id → why it fails on a correct export (read in the installed package's
# focus_validator/rules/version_sets/1.0/<rule>.yaml).
KNOWN_LIMITATIONS = {
    "BillingCurrency_IsCurrencyCode": (
        "the currency-code check cannot load its ISO 4217 list and fails on every file "
        '(FileNotFoundError("2")), whatever the value; ours is "USD"'
    ),
    "InvoiceIssuer_Required": (
        "looks for a column `InvoiceIssuer`, the pre-1.0 name; FOCUS 1.0-1.2 name it "
        "`InvoiceIssuerName`, which the export has"
    ),
    "Provider_Required": (
        "looks for `Provider`, the pre-1.0 name; the export has FOCUS's `ProviderName`"
    ),
    "Publisher_Required": (
        "looks for `Publisher`, the pre-1.0 name; the export has FOCUS's `PublisherName`"
    ),
    "ResourceID_Required": (
        "looks for `ResourceID`; the FOCUS column (in 1.0 as in 1.2) is `ResourceId`, present"
    ),
    "SkuPriceId_Nullable": (
        "its SQL reads `ChargeType`, a pre-1.0 column renamed `ChargeCategory` in FOCUS 1.0, and "
        "fails with KeyError; SkuPriceId is filled on every row"
    ),
}


def run_validator(validator: str, data_file: Path) -> ET.Element:
    """The validator's JUnit report of `data_file`, parsed."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.xml"
        subprocess.run(
            [
                validator,
                "--data-file",
                str(data_file),
                "--validate-version",
                VALIDATE_VERSION,
                "--output-type",
                "unittest",
                "--output-destination",
                str(report),
            ],
            check=False,  # it exits non-zero whenever a rule fails; the report says which
            capture_output=True,
        )
        if not report.is_file():
            raise SystemExit(f"focus-validator wrote no report for {data_file}")
        return ET.parse(report).getroot()


def failed_rules(root: ET.Element) -> tuple[int, set[str]]:
    """(rules run, ids of the failed ones) from a JUnit report."""
    cases = list(root.iter("testcase"))
    failed = {
        case.attrib["name"].split(" :: ")[0]
        for case in cases
        if case.find("failure") is not None or case.find("error") is not None
    }
    return len(cases), failed


def _rows(data_file: Path) -> int:
    if data_file.suffix == ".parquet":
        return int(pq.read_metadata(data_file).num_rows)
    return data_file.read_text().count("\n") - 1


def main() -> int:
    """Validate, print every finding with its reason, exit 1 on anything undocumented."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validator", required=True, help="path of the focus-validator program")
    parser.add_argument("--data-file", required=True, type=Path, help="the FOCUS CSV export")
    args = parser.parse_args()
    if not args.data_file.is_file() or args.data_file.stat().st_size == 0:
        print(f"no export at {args.data_file}", file=sys.stderr)
        return 1
    rows = _rows(args.data_file)
    ran, failed = failed_rules(run_validator(args.validator, args.data_file))
    print(f"focus-validator (FOCUS {VALIDATE_VERSION} rules): {ran} rules on {rows} rows, "
          f"{len(failed)} failed")  # fmt: skip
    for rule in sorted(failed & KNOWN_LIMITATIONS.keys()):
        print(f"  known validator limitation {rule}: {KNOWN_LIMITATIONS[rule]}")
    unexplained = sorted(failed - KNOWN_LIMITATIONS.keys())
    fixed = sorted(KNOWN_LIMITATIONS.keys() - failed)
    for rule in unexplained:
        print(f"  FAILED {rule}: not a documented validator limitation", file=sys.stderr)
    for rule in fixed:
        print(f"  {rule} passes now: drop it from KNOWN_LIMITATIONS", file=sys.stderr)
    if ran == 0:
        print("  the validator ran no rules", file=sys.stderr)
    return 1 if unexplained or fixed or ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

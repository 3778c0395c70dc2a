"""The long fuzzing campaign of the REST API: schemathesis against a live node.

A `pktchain node` with native functions and a router serves its API on
loopback (no namespace needed), and ``st run`` drives it from the API's own
OpenAPI document with every check and every phase: examples, coverage,
fuzzing and stateful (sequences of calls following the document's links:
create, then show, update and delete what was created). The rules the
document states only in words are honoured by tests/support/api_fuzz_hooks.py.
Printed: the operations, the test cases generated, the failures and errors,
each phase's outcome and the time taken, then the node's own counts of what
its limits turned away; the exit status is 1 when anything failed.

    .venv/bin/python bench/fuzz_api.py [--examples 1000] [--seed N] [--workers 1]

Recorded in docs/robustness.md ("The REST API").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the fuzzing support

from support.api_fuzz import PHASES, api_node, run_schemathesis  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", type=int, default=1000, help="test cases per operation (1000)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="schemathesis' seed (default: from the clock)"
    )
    parser.add_argument("--workers", type=int, default=1, help="concurrent workers (1)")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"phases to run ({','.join(PHASES)})"
    )
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    phases = tuple(args.phases.split(","))
    with tempfile.TemporaryDirectory(prefix="pktchain-fuzz-") as workdir:
        work = Path(workdir)
        with api_node(f"fuzz{os.getpid()}", work) as node:
            print(f"node {node.name}: API {node.api_url()}", flush=True)
            print(
                f"st run: every check, phases {', '.join(phases)}, {args.examples} cases per "
                f"operation, seed {seed}, {args.workers} worker(s)",
                flush=True,
            )
            result = run_schemathesis(
                node.api_url(),
                work / "report.json",
                examples=args.examples,
                seed=seed,
                phases=phases,
                workers=args.workers,
            )
            counters = node.status()["api_counters"]
    print(f"operations tested:   {result.operations}")
    print(f"test cases:          {result.generated}")
    print(f"with failures:       {result.with_failures}")
    print(f"unique failures:     {result.unique_failures}")
    print(f"errors:              {result.errored}")
    print("phases:              " + ", ".join(f"{k} {v}" for k, v in result.phases.items()))
    print(f"time:                {result.seconds:.0f} s")
    print(f"node's API counters: {json.dumps(counters, sort_keys=True)}")
    failed = result.exit_code != 0 or result.unique_failures or result.errored
    if failed:
        print(result.output)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Run the multi-host test bed's scenarios by hand and print their numbers.

Three forkserve hosts in network namespaces behind HAProxy (conf/haproxy.cfg)
or nginx (conf/nginx.conf), a client host loading them with GETs and POSTs;
see tests/netbed.py and tests/netbed_scenarios.py.  As root, from the
repository root, with an interpreter that has forkserve and the test extras:

    python bench/netbed.py --list
    python bench/netbed.py rolling-hup kill-9 --balancer haproxy --kind sync asgi
    python bench/netbed.py --all --json results.jsonl

Prints one Markdown table row per run: scenario, balancer, worker kind,
requests, failed, p99 during the change, and what else was measured.
Everything the bed creates is removed when each run ends.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from netbed import netns_unavailable  # noqa: E402
from netbed_scenarios import SCENARIOS, run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help="scenario names (--list)")
    parser.add_argument("--all", action="store_true", help="every scenario that can run")
    parser.add_argument("--list", action="store_true", help="list the scenarios")
    parser.add_argument("--balancer", nargs="+", default=["haproxy", "nginx"],
                        choices=["haproxy", "nginx"])
    parser.add_argument("--kind", nargs="+", default=["sync", "asgi"], choices=["sync", "asgi"])
    parser.add_argument("--json", help="append each run's numbers to this file (JSON lines)")
    args = parser.parse_args()
    if args.list:
        for key, scenario in SCENARIOS.items():
            print(f"{key:24} {scenario.title}")
        return 0
    keys = list(SCENARIOS) if args.all else args.scenarios
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown or not keys:
        parser.error(f"unknown scenarios {unknown} (see --list)" if unknown else "no scenario given")
    why = netns_unavailable()
    if why:
        print(f"netbed: {why}", file=sys.stderr)
        return 2
    print("| scenario | balancer | kind | requests | failed | p99 ms | other |")
    print("|---|---|---|---:|---:|---:|---|")
    for key in keys:
        for balancer in args.balancer:
            for kind in args.kind:
                with tempfile.TemporaryDirectory(prefix="netbed-") as tmp:
                    record = run(Path(tmp), key, balancer, kind).record
                other = {k: v for k, v in record.items() if k not in
                         ("scenario", "balancer", "kind", "requests", "failed", "p99_ms")}
                print(f"| {key} | {balancer} | {kind} | {record['requests']} | "
                      f"{record['failed']} | {record['p99_ms']} | {json.dumps(other)} |",
                      flush=True)
                if args.json:
                    with open(args.json, "a") as out:
                        out.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``uih`` command line: ``demo``, ``bench``, ``inspect`` and ``publish`` (``--help`` on each)."""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

# The engine (Numba, pyarrow) loads only once a command runs: ``--help``, ``--version`` and an argument
# error answer in a fraction of a second. The publish defaults below are the engine's own
# (``GRACE_S``, ``ORPHAN_AGE_S``; a test keeps them equal), written out for the same reason.
GRACE_S = 3600.0
ORPHAN_AGE_S = 86400.0


def _store_inside(path: str) -> str | None:
    """The store a folder holds one level down (``uih_demo/store``), for a user who named the folder."""
    from engine import UIHStore
    root = Path(path)
    if not root.is_dir() or UIHStore.versions(root):
        return None
    inner = sorted(p for p in root.iterdir() if p.is_dir() and UIHStore.versions(p))
    return str(inner[0]) if inner else None



def cmd_inspect(args) -> int:
    import json

    from engine import UIHError, UIHStore

    from .fmt import fmt_bytes, table
    try:
        store = UIHStore.open(args.path, read_only=True)  # never locks, writes, repairs or deletes
    except UIHError as e:
        inner = _store_inside(args.path)
        if inner is None:
            raise
        raise type(e)(f"{args.path} is not a UIH store but holds one: run uih inspect {inner}") from e
    st = store.stats()
    store.close()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"UIH store {args.path}")
    print(table([[k, st[k]] for k in ("version", "segments", "users", "sealed_events", "mutable_events")] +
                 [["versions", f"{st['versions'][0]}..{st['versions'][-1]} ({len(st['versions'])})"],
                  ["columns", ", ".join(f"{c}:{t}" for c, t in st["columns"].items())],
                  ["event type column", st["event_type_column"]],
                  ["rare types (sidecar)", st["rare_types"] or "-"],
                  ["uncommon types (sidecar)", st.get("uncommon_types") or "-"],
                  ["immutable tier bytes", fmt_bytes(st["segment_bytes"])],
                  ["sidecar bytes (all levels)", fmt_bytes(st["sidecar_bytes"])],
                  ["mutable tier (log) bytes", fmt_bytes(st["log_bytes"])],
                  ["store id", st["store_id"]],
                  ["disk bytes (all files)", fmt_bytes(st["disk_bytes"])],
                  ["live bytes (this version)", fmt_bytes(st["live_bytes"])],
                  ["reclaimable bytes (expire)", fmt_bytes(st["reclaimable_bytes"])],
                  ["quarantined files", quarantine_row(st["quarantined"])]], ["", "value"]))
    for rel in st["quarantined"]:  # kept, never deleted: files that may belong to a lost newer version
        print(f"quarantined: {rel}")
    return 0


def quarantine_row(files: dict) -> str:
    from .fmt import fmt_bytes

    if not files:
        return "-"
    return (f"{len(files)} ({fmt_bytes(sum(files.values()))}): files no manifest names, kept because they may "
            "belong to a lost newer version; restore its manifest, or delete them")


def cmd_publish(args) -> int:
    from engine import publish

    from .fmt import fmt_bytes
    got = publish(args.store, args.uri, include_log=args.log, prune=args.prune, grace_s=args.grace_s,
                  orphan_age_s=args.orphan_age_s)
    print(f"published {args.store} -> {args.uri}: versions {got['versions'][0]}..{got['versions'][-1]}, "
          f"{got['files_copied']} files copied ({fmt_bytes(got['bytes_copied'])}), "
          f"{got['files_skipped']} already there")
    if args.prune:
        print(f"pruned: {len(got['versions_removed'])} expired versions, {got['files_removed']} objects "
              f"({fmt_bytes(got['bytes_freed'])}), of which {got['orphans_removed']} orphans")
    print(f"read it with UIHStore.open({args.uri!r}, read_only=True)")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(args)


def cmd_bench(args) -> int:
    from .report import run_bench
    return run_bench(args)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``uih demo: error: argument --users: ...`` on stderr, exit code 2
    (argparse's own code for bad arguments), without the usage block above it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# the largest size or count a command takes: beyond it NumPy allocations fail (a traceback, not a message)
# long before anything useful runs; the workloads here are a few thousand users and days
MAX_COUNT = 10**7


def positive_int(text: str) -> int:
    """argparse type: an integer from 1 to ``MAX_COUNT`` (sizes and counts)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be an integer from 1 to {MAX_COUNT:,}, got {text!r}")
    return value


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


class _Version(argparse.Action):
    """``--version``: the installed package's version, looked up only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("uih-latemat")
        except PackageNotFoundError:  # run from a checkout that was never installed
            v = "unknown (not installed)"
        print(f"uih {v}")
        parser.exit(0)


# The engine's advice names ``filesystem=``, a Python argument; on the command line the same options go in
# the URI (pyarrow's query parameters) or in the environment.
_API_ADVICE = re.compile(r",? or pass filesystem=\S+ \(or [^)]*\) configured for it|filesystem=, or ")
_CLI_ADVICE = ("; from the command line, put the options in the URI, e.g. s3://bucket/path?endpoint_override="
               "host:9000&scheme=http&region=us-east-1 (gs://...?endpoint_override=... for GCS), or set "
               "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")


def _for_cli(message: str) -> str:
    """An engine error as one line, with advice a command-line user can follow."""
    message = " ".join(message.split())
    if "filesystem=" not in message:
        return message
    return _API_ADVICE.sub("", message) + _CLI_ADVICE


def _run(args) -> int:
    """Run the chosen command; an engine error or a failed read or write is one line and exit code 2."""
    try:
        from engine import UIHError
    except ImportError as e:  # a dependency missing from this environment
        print(f"uih: error: {e}; install the package with its dependencies (make install)", file=sys.stderr)
        return 2
    try:
        return args.func(args) or 0
    except (UIHError, OSError) as e:
        print(f"uih: error: {_for_cli(str(e))}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    p = _Parser(prog="uih", description="Versioned late materialization of user "
                "interaction histories: store once, log thin rows, reconstruct at training.")
    p.add_argument("--version", action=_Version, help="print the installed version and exit")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the main job on a generated multi-tenant workload and print the report")
    d.add_argument("--out", default="uih_demo", help="working folder: new, empty, or made by an earlier "
                   "demo (the outputs its marker file lists are replaced; nothing else is deleted) [uih_demo]")
    d.add_argument("--users", type=positive_int, default=500, help="users in the workload [500]")
    d.add_argument("--days", type=positive_int, default=2, help="simulated serving days [2]")
    d.add_argument("--median-history", type=positive_int, default=1000, help="median events per user [1000]")
    d.add_argument("--batch-size", type=positive_int, default=256, help="training batch size [256]")
    d.add_argument("--no-progress", action="store_true", help="hide progress bars")
    d.set_defaults(func=cmd_demo)
    b = sub.add_parser("bench", help="run the benchmarks, write results/*.json, REPORT.md and plots into --out")
    b.add_argument("--quick", action="store_true", help="small sizes (CI)")
    b.add_argument("--medium", action="store_true", help="a fifth of the full workload's users, same shape (minutes)")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="folder for the JSON results, REPORT.md and plots [uih_bench_out]")
    where.add_argument("--update-repo", action="store_true", help="instead write the tracked copies: bench/REPORT.md, "
                   "bench/*.png and bench/results/*.json")
    b.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b.set_defaults(func=cmd_bench)
    i = sub.add_parser("inspect", help="versions, segments, users, events and bytes per tier of a store")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_inspect)
    u = sub.add_parser("publish", help="copy a store's immutable tier to object storage (s3://, gs://, ...) for "
                       "remote read-only readers; incremental, manifests last")
    u.add_argument("store", help="the local store folder")
    u.add_argument("uri", help="destination, e.g. s3://bucket/store (credentials and endpoint from the "
                   "environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...)")
    u.add_argument("--log", action="store_true", help="also copy the newest version's log, so remote "
                   "readers see the mutable tier as of now (default: immutable tier only)")
    u.add_argument("--prune", action="store_true", help="afterwards delete at the destination the versions "
                   "the local store has expired, and the objects only they name")
    u.add_argument("--grace-s", type=seconds, default=GRACE_S, help="with --prune: remove a version only "
                   f"once its successor has been published this long (default {GRACE_S:g} s)")
    u.add_argument("--orphan-age-s", type=seconds, default=ORPHAN_AGE_S, help="with --prune: also delete "
                   "objects of the store's folders that no manifest names once they are this old (left by a "
                   f"publish or prune that died midway; default {ORPHAN_AGE_S:g} s)")
    u.set_defaults(func=cmd_publish)
    return _run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

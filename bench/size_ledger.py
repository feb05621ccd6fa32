"""How big is the code of the features Rampart had at a base commit, now? (issue 15's size target)

Issue 15 asks for src/rampart (Python, without migration files) to be 15% smaller than at e4c25c8 (12,827
lines by `wc -l`; the issue said 12,868) "for the same features, code added by other issues counted apart".
This counts every line of src/rampart at HEAD by the commit that wrote it, following lines moved or copied
between files (`git blame -w -M -C -C`):

- base: written at or before the base commit, and still here;
- lean: written by the commits of issue 15 (the merge of the jose branch, the lean branch's own commits,
  and any commit named with --lean);
- other: written by the other issues (13, 14, 16, 17, 18) and everything else.

base + lean is the code of the base's features now. It is an estimate both ways: a base line that another
issue edited counts as that issue's, and a line issue 15 edited inside another issue's code counts as
issue 15's.

    .venv/bin/python bench/size_ledger.py [--lean COMMIT ...] [--files 30]
"""

from __future__ import annotations

import argparse
import collections
import subprocess

BASE = "e4c25c8"
BASE_LINES = 12_827
# Issue 15's commits: the jose branch (merged by b773e24), the lean branch (first-parent from the manager
# split's merge to its last commit before main was merged into it), the webhooks branch, and single commits.
LEAN_RANGES = (
    ("b773e24^1", "b773e24^2", False),
    ("dcb4342", "30b13aa", True),
    ("c1fddbe^1", "c1fddbe^2", False),  # webhooks as a resource
    ("ce738af^1", "ce738af^2", False),  # lean-cache
    ("6c1f975^1", "6c1f975^2", False),  # lean-events
    ("686d994^1", "686d994^2", False),  # lean-resources
    ("1eb2f08^1", "1eb2f08^2", False),  # lean-ops
    ("b6c15f3^1", "b6c15f3^2", False),  # lean-auth
    ("8f8343e^1", "8f8343e^2", False),  # lean-misc
    ("906e5a5^1", "906e5a5^2", False),  # lean-second
    ("02b0515^1", "02b0515^2", False),  # lean-final-b
    ("e839388^1", "e839388^2", False),  # lean-final-a
)
LEAN_COMMITS = ("6db818e",)  # session SQL in one place


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def commits(start: str, end: str, *, first_parent: bool) -> set[str]:
    return set(git("rev-list", *(["--first-parent"] if first_parent else []), f"{start}..{end}").split())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lean", nargs="*", default=[], help="more commits of issue 15")
    parser.add_argument("--files", type=int, default=0, help="list this many files, most base lines first")
    args = parser.parse_args()
    base = set(git("rev-list", BASE).split())
    lean = set().union(*(commits(a, b, first_parent=fp) for a, b, fp in LEAN_RANGES))
    lean |= {git("rev-parse", c).strip() for c in (*LEAN_COMMITS, *args.lean)}
    files = [
        f for f in git("ls-files", "src/rampart").split() if f.endswith(".py") and "/migrations/" not in f
    ]
    total: collections.Counter[str] = collections.Counter()
    per_file: dict[str, collections.Counter[str]] = {}
    for path in files:
        counts: collections.Counter[str] = collections.Counter()
        for line in git("blame", "-w", "-M", "-C", "-C", "--line-porcelain", "HEAD", "--", path).splitlines():
            sha = line[:40]
            if len(line) > 41 and line[40] == " " and all(c in "0123456789abcdef" for c in sha):
                counts["base" if sha in base else "lean" if sha in lean else "other"] += 1
        per_file[path] = counts
        total += counts
    for path in sorted(per_file, key=lambda p: -per_file[p]["base"])[: args.files]:
        c = per_file[path]
        print(f"{c['base']:6} {c['lean']:6} {c['other']:6}  {path}")
    same = total["base"] + total["lean"]
    print(
        f"base {total['base']:,}, issue 15 {total['lean']:,}, other issues {total['other']:,}"
        f" (all {sum(total.values()):,} lines)"
    )
    print(f"the base's features: {same:,} lines, {1 - same / BASE_LINES:.1%} smaller than {BASE_LINES:,}")


if __name__ == "__main__":
    main()

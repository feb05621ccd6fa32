#!/bin/bash
# Alternating A/B: old = 8f3b4fd (session start), new = main after the lean pass.
cd /work/main
for pair in 1 2 3; do
  for side in old new; do
    if [ $side = old ]; then bin=/tmp/ab-old/.venv/bin/rampart; else bin=/work/main/.venv/bin/rampart; fi
    echo "=== pair $pair $side $(date -u +%H:%M:%S) load $(cut -d' ' -f1 /proc/loadavg)"
    .venv/bin/python bench/compare.py --only rampart --rampart-bin $bin --rounds 1 --no-markdown --no-pgbench 2>&1 | grep -E "^  (get|list|patch|create)|RSS|results:"
  done
done

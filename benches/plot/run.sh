#!/bin/sh
exec python3 "$(dirname "$0")/plot.py" "$@"   # SVG charts of benches/results/*.jsonl into benches/plot/ (standard library only)

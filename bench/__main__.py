"""``python -m bench [--quick] [--only NAME ...]``: run the benchmarks, print one table, write
the raw results to bench/results/latest.json.

Every panel runs as ``python -m app`` in a subprocess with its own temp data dir, free port and
token, and AIKORE_STOP_ON_EXIT=1; everything a benchmark starts is ended before the run exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from .benchmarks import BENCHMARKS, PLACEHOLDERS
from .core import Context, Result, fmt

RESULTS = Path(__file__).resolve().parent / 'results'
COLUMNS = ('benchmark', 'measured', 'target', 'baseline (same run)', 'ratio', 'original AiKore')


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m bench', description=__doc__)
    parser.add_argument('--quick', action='store_true', help='fewer repetitions, shorter windows (smoke run)')
    parser.add_argument(
        '--only',
        action='append',
        metavar='NAME',
        choices=sorted(BENCHMARKS),
        help='run only this benchmark (repeatable): ' + ', '.join(BENCHMARKS),
    )
    parser.add_argument('--keep', action='store_true', help='keep the temp folder (panel logs, data dirs)')
    return parser.parse_args(argv)


def failed_rows(name: str, error: str) -> list[Result]:
    return [
        Result(key=key, label=label, unit=unit, value=None, target=target, target_text=text,
               original=original, error=error)
        for key, label, target, text, original, unit in PLACEHOLDERS[name]
    ]  # fmt: skip


def row(result: Result) -> tuple[str, ...]:
    if result.error is not None:
        measured = 'FAILED'
    else:
        measured = fmt(result.value, result.unit) + (f' ({result.note})' if result.note else '')
    baseline = f'{fmt(result.baseline, result.unit)} ({result.baseline_label})' if result.baseline is not None else '-'
    ratio = f'{result.ratio:.2f}x' if result.ratio is not None else 'n/a'
    mark = 'ok' if result.met else 'MISSED'
    return (result.label, measured, f'{result.target_text} [{mark}]', baseline, ratio, result.original)


def table(results: list[Result]) -> str:
    rows = [COLUMNS, *(row(result) for result in results)]
    widths = [max(len(cells[index]) for cells in rows) for index in range(len(COLUMNS))]
    lines = [' | '.join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) for cells in rows]
    lines.insert(1, '-+-'.join('-' * width for width in widths))
    return '\n'.join(line.rstrip() for line in lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    ctx = Context(quick=args.quick)
    ctx.shared['selected'] = selected
    results: list[Result] = []
    began = time.perf_counter()
    try:
        for name in BENCHMARKS:
            if name not in selected:
                continue
            print(f'[bench] {name} ...', file=sys.stderr, flush=True)
            step = time.perf_counter()
            try:
                results.extend(BENCHMARKS[name](ctx))
            except Exception as exc:
                traceback.print_exc()
                results.extend(failed_rows(name, f'{type(exc).__name__}: {exc}'))
            print(f'[bench] {name} took {time.perf_counter() - step:.1f} s', file=sys.stderr, flush=True)
    finally:
        ctx.close(keep=args.keep)
        if args.keep:
            print(f'[bench] kept {ctx.root}', file=sys.stderr)
    elapsed = time.perf_counter() - began

    print(table(results))
    print()
    met = [result for result in results if result.met]
    missed = [result.key for result in results if not result.met]
    print(
        f'Targets met: {len(met)}/{len(results)}: '
        + (', '.join(result.key for result in met) or 'none')
        + (f'; MISSED: {", ".join(missed)}' if missed else '')
        + f'. Run took {elapsed:.0f} s{" (--quick)" if args.quick else ""}; '
        'log-burst stalls are measured from outside, as GET /api/health latency.'
    )
    RESULTS.mkdir(exist_ok=True)
    report = {
        'finished_at': datetime.now(UTC).isoformat(timespec='seconds'),
        'quick': args.quick,
        'selected': selected,
        'duration_s': elapsed,
        'host': {
            'cpus': os.cpu_count(),
            'python': sys.version.split()[0],
            'platform': platform.platform(),
        },
        'targets_met': len(met),
        'targets_total': len(results),
        'results': [result.as_json() for result in results],
    }
    (RESULTS / 'latest.json').write_text(json.dumps(report, indent=2) + '\n')
    return 1 if any(result.error for result in results) else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

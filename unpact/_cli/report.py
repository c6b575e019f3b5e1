"""``unpact report AUDIT_DIR [--out FILE]``: write the self-contained HTML report of an audit directory.

The plotting package ``viz`` is loaded as a plugin inside the command (see ``_report_plugin``), so the library never
depends on it.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)


def _run(args: argparse.Namespace) -> int:
    from unpact._cli._report_plugin import report_module

    report = report_module()  # its ReportError is an UnpactError: the CLI prints it as one line
    path = report.write_report(args.audit_dir, args.out, max_examples=args.max_examples, max_records=args.max_records)
    print(path)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser(
        "report",
        help="write one self-contained HTML page from an audit directory",
        description="Write the audit report (summary, verdict, recovery chart, heatmaps, lens, circuits, records) as "
        "ONE offline HTML file and print its path.",
    )
    p.add_argument("audit_dir", help="output directory of 'unpact audit' (contains summary.json)")
    p.add_argument("--out", default=None, help="HTML file to write (default: AUDIT_DIR/report.html)")
    p.add_argument("--max-examples", type=int, default=4, help="examples with figures per model (default 4)")
    p.add_argument("--max-records", type=int, default=300, help="per-item records listed (default 300)")
    p.set_defaults(func=_run)

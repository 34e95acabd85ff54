"""Efficiency of every engine available here: latency, throughput, peak memory, agreement with eager fp32.

    python evaluate_efficiency.py [--cfg-path config/eval.yaml] [--output-dir DIR] [--set key.sub=value ...]

Each engine is measured in a process of its own that loads it as the evaluator does (a compiled engine without the
model), so the peak memory is the deployed figure. Writes efficiency.json, efficiency.md and efficiency.png under
``<output_dir>/efficiency`` and prints the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from evaluator.config import load_eval_config
from evaluator.efficiency import efficiency_chart, format_table, run_efficiency
from evaluator.engines import efficiency_batches, load_eval_checkpoint
from evaluator.report_html import refresh_report
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.cli import command_parser
from handseg.runtime.devices import device_label, require_device, start_line
from handseg.runtime.errors import cli_main
from handseg.runtime.overrides import add_set_argument


@cli_main
def main(argv=None) -> int:
    p = command_parser(__doc__)
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--output-dir", default=None, help="default: <output_dir>/efficiency from the config")
    add_set_argument(p)
    args = p.parse_args(argv)
    cfg = load_eval_config(args.cfg_path, sets=args.set)
    require_device(cfg.device, args.cfg_path)
    print(start_line([device_label(cfg.device)], cfg.precision, max(efficiency_batches(cfg)), what="tiles"),
          flush=True)
    out = Path(args.output_dir) if args.output_dir else Path(cfg.output_dir) / "efficiency"
    result = run_efficiency(cfg, load_eval_checkpoint(cfg, file=args.cfg_path), args.cfg_path, sets=args.set)
    table = format_table(result)
    atomic_write_text(out / "efficiency.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "efficiency.md", "# Efficiency\n\n" + table)
    efficiency_chart(result, out / "efficiency.png")
    print(table)
    print(f"results -> {out}/efficiency.json, efficiency.md, efficiency.png")
    report = refresh_report(out.parent) if out.name == "efficiency" else None
    if report is not None:
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

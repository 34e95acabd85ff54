"""The deployment path, this tree against a baseline revision in one run: ``predict.py`` on one image.

    python benchmarks/bench_deploy.py [--image data/phantom/test/DCM/ID041/<png>] [--cfg-path config/demo/eval.yaml]
                                      [--baseline-rev f26ec13 | --baseline-root DIR] [--repeats 3]

For each tree (this checkout, and the baseline revision checked out into a temporary git worktree) a fresh
process imports ``predict.py`` (start-up: every module the command needs), then runs its ``main`` on the image
with the config's engines, thresholds and post-processing (run from this repository's root, so both trees read the
same checkpoints, engines and data). Printed per tree: import seconds and one-image seconds (best of
``--repeats``), peak RSS (``VmHWM``) of the process, and which heavy packages it loaded: albumentations (training
augmentation), transformers' modelling code (the eager model) and accelerate. The default baseline is the last
revision before ``handseg`` was split into subpackages (when the deployment path still imported albumentations
through the data config).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from handseg.format.markdown import markdown_table
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import HandSegError, cli_main

REPO = Path(__file__).resolve().parents[1]
PROBE = r"""
import json, sys, time, runpy
tree, image, cfg, out = sys.argv[1:5]
sys.path.insert(0, tree)
t0 = time.perf_counter()
module = runpy.run_path(tree + "/predict.py", run_name="predict_probe")  # imports, does not run main
t1 = time.perf_counter()
try:
    module["main"]([image, "--cfg-path", cfg, "--out", out])
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
t2 = time.perf_counter()
hwm = next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
mods = set(sys.modules)
print(json.dumps({"import_s": t1 - t0, "image_s": t2 - t1, "peak_rss_mib": hwm,
                  "albumentations": "albumentations" in mods, "accelerate": "accelerate" in mods,
                  "model_code": any(m.startswith("transformers.models.") and ".modeling_" in m and ".auto." not in m
                                    for m in mods)}))  # a network's modelling code (the auto module is a table)
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--image", type=Path, default=None, help="a PNG (default: the first test image of the demo data)")
    p.add_argument("--cfg-path", default="config/demo/eval.yaml")
    p.add_argument("--baseline-rev", default="f26ec13", help="git revision of the baseline tree")
    p.add_argument("--baseline-root", type=Path, default=None,
                   help="a checkout of the baseline that has run `make demo`: it predicts with its own checkpoints "
                        "and engines (checkpoints of a later tree can carry keys an older one cannot read)")
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args(argv)


def probe(tree: Path, image: Path, cfg: str, root: Path) -> dict:
    """One fresh process: import predict.py from ``tree``, then predict ``image`` with that tree's copy of the config
    ``cfg`` (its keys are the ones that tree knows), the relative paths in it read from ``root``; its measurements."""
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run([sys.executable, "-c", PROBE, str(tree), str(image), str(tree / cfg), out], cwd=root,
                              capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0:
        raise HandSegError(f"predict.py of {tree} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(tree: Path, image: Path, cfg: str, repeats: int, root: Path) -> dict:
    runs = [probe(tree, image, cfg, root) for _ in range(repeats)]
    best = {k: min(r[k] for r in runs) for k in ("import_s", "image_s", "peak_rss_mib")}
    return {**runs[0], **best}


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    image = args.image or next(iter(sorted((REPO / "data/phantom/test/DCM").rglob("*.png"))), None)
    if image is None or not Path(image).is_file():
        raise HandSegError("no test image: run `make demo` first, or pass --image")
    image = Path(image).resolve()
    if args.baseline_root is not None:  # a checkout of the baseline with its own demo run
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.baseline_root, capture_output=True,
                             text=True).stdout.strip()
        rows = {f"baseline ({rev})": best_of(args.baseline_root, image, args.cfg_path, args.repeats,
                                             args.baseline_root),
                "this tree": best_of(REPO, image, args.cfg_path, args.repeats, REPO)}
    else:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.baseline_rev], cwd=REPO,
                           check=True)
            try:
                rows = {f"baseline ({args.baseline_rev})": best_of(base, image, args.cfg_path, args.repeats, REPO),
                        "this tree": best_of(REPO, image, args.cfg_path, args.repeats, REPO)}
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    yes = {True: "yes", False: "no"}
    cells = [[name, f"{r['import_s']:.2f}", f"{r['image_s']:.2f}", f"{r['peak_rss_mib']:.0f}",
              yes[r["albumentations"]], yes[r["model_code"]], yes[r["accelerate"]]] for name, r in rows.items()]
    print(f"predict.py on {image} with {args.cfg_path}, best of {args.repeats} fresh processes")
    header = ["tree", "import s", "one image s", "peak RSS MiB", "albumentations", "transformers model code",
              "accelerate"]
    print(markdown_table(header, cells, "lrrrccc"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

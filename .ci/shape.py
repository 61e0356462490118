"""The shape CI holds the code to: the wheel installs the `sessionctl` import name only, no module
of the product is over 400 lines, no function over cyclomatic complexity 20 (radon)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from radon.complexity import cc_visit

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES, MAX_COMPLEXITY = 400, 20


def wheel_names() -> set[str]:
    """The top-level names a wheel built from this tree installs (its .dist-info apart)."""
    with tempfile.TemporaryDirectory() as tmp:
        # built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".*", "build", "site", "*.egg-info", "__pycache__"))
        subprocess.run(  # noqa: S603 - this interpreter's pip, on a copy of this tree
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
            check=True,
        )
        (wheel,) = out.glob("*.whl")
        names = {n.split("/", 1)[0] for n in zipfile.ZipFile(wheel).namelist()}
    return {n for n in names if not n.endswith(".dist-info")}


def main() -> int:
    problems = []
    names = wheel_names()
    if names != {"sessionctl"}:
        problems.append(f"the wheel installs {sorted(names)}: only `sessionctl` may be installed")
    for path in sorted((ROOT / "sessionctl").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines > MAX_LINES:
            problems.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_LINES})")
        for block in cc_visit(text):
            if block.complexity > MAX_COMPLEXITY:
                problems.append(
                    f"{path.relative_to(ROOT)}:{block.lineno} {block.name}: complexity {block.complexity}"
                    f" (at most {MAX_COMPLEXITY})"
                )
    for p in problems:
        print(f"shape: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

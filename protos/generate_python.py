"""Generate the Python gRPC stubs for protos/ into service/api/.

protoc writes absolute imports (`from switchboard.v1 import ...`) that only work
when the output directory is on sys.path; the stubs live inside the `service`
package instead, so those imports are rewritten to `service.api.switchboard.v1`.

Run `python protos/generate_python.py` (or `make protos`); CI runs it with
`--check` and fails when the committed stubs differ from a fresh generation.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUTPUT = ROOT / "service" / "api"
PACKAGE_PREFIX = "service.api"
WELL_KNOWN_TYPES = Path(grpc_tools.__file__).parent / "_proto"
ABSOLUTE_IMPORT = re.compile(r"^from switchboard\.", re.MULTILINE)


def generate(out_dir: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{WELL_KNOWN_TYPES}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for generated in out_dir.rglob("*.py*"):
        text = ABSOLUTE_IMPORT.sub(f"from {PACKAGE_PREFIX}.switchboard.", generated.read_text())
        generated.write_text(text)
    for directory in [out_dir, *(d for d in out_dir.rglob("*") if d.is_dir())]:
        (directory / "__init__.py").touch()


def differences(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    changed = [p for p in files_a & files_b if not filecmp.cmp(a / p, b / p, shallow=False)]
    return sorted(str(p) for p in (files_a ^ files_b) | set(changed))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "api"
        fresh.mkdir()
        generate(fresh)
        if options.check:
            stale = differences(fresh, OUTPUT)
            if stale:
                print("generated stubs are stale; run `make protos`:", *stale, sep="\n  ")
                return 1
            return 0
        shutil.rmtree(OUTPUT, ignore_errors=True)
        shutil.copytree(fresh, OUTPUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())

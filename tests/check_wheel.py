"""Check that a built wheel ships both packages: the compiled router_core (typed) and service."""

from __future__ import annotations

import configparser
import re
import sys
import zipfile

REQUIRED = [
    r"router_core/__init__\.py",
    r"router_core/__init__\.pyi",
    r"router_core/py\.typed",
    r"router_core/router_core\.cpython-.*\.so",
    r"service/__init__\.py",
    r"service/default_config\.yaml",
    r"service/api/switchboard/v1/gateway_pb2\.py",
    r"service/api/switchboard/v1/gateway_pb2_grpc\.py",
    r"service/providers/openai_compat\.py",
    r"switchboard/client\.py",
    r"switchboard-.*\.dist-info/entry_points\.txt",
]


def main(wheel: str) -> int:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    missing = [pattern for pattern in REQUIRED if not any(re.fullmatch(pattern, name) for name in names)]
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    if scripts.get("console_scripts", "switchboard", fallback=None) != "service.cli:main":
        missing.append("console script switchboard = service.cli:main")
    if missing:
        print(f"{wheel} lacks:", *missing, sep="\n  ")
        return 1
    print(f"{wheel}: {len(names)} files, router_core and service present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

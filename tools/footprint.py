"""Installed size of a virtual environment by package: what `make install` costs on disk.

Run:  .venv/bin/python tools/footprint.py [VENV]   (default .venv; any Python reads any venv)

Each package's size is the sum of the files its RECORD lists (apparent sizes, MB = 2**20 bytes); the total
is every file under the venv's site-packages. The CUDA group is what PyPI's default torch build pulls in on
Linux x86_64 (nvidia-*, cuda-*, triton): the part a CPU-only torch (`make TORCH_INDEX=...`) leaves out, which
also has a smaller torch itself (no CUDA kernels).
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

MB = 2**20
CUDA = ("nvidia-", "cuda-", "triton")


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages")) or sorted(venv.glob("Lib/site-packages"))
    if not found:
        raise SystemExit(f"{venv}: no site-packages (not a virtual environment?)")
    return found[0]


def tree_size(folder: Path) -> int:
    return sum((Path(root) / name).stat().st_size for root, _, names in os.walk(folder) for name in names)


def package_sizes(site: Path) -> dict[str, int]:
    sizes = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        files = [Path(dist.locate_file(f)) for f in dist.files or ()]
        sizes[dist.metadata["Name"].lower()] = sum(f.stat().st_size for f in files if f.is_file())
    return sizes


def main() -> None:
    venv = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv")
    site = site_packages(venv)
    sizes = package_sizes(site)
    total = tree_size(site)
    cuda = sum(size for name, size in sizes.items() if name.startswith(CUDA))
    print(f"{site}: {total / MB:,.0f} MB in {len(sizes)} packages")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1])[:8]:
        print(f"  {name:28s} {size / MB:8,.0f} MB")
    print(f"CUDA group (nvidia-*, cuda-*, triton): {cuda / MB:,.0f} MB; everything else: {(total - cuda) / MB:,.0f} MB")


if __name__ == "__main__":
    main()

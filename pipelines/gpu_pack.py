"""Re-code a training pack for a GPU run, in parts that each travel with one device call, checked bit-exact.

    python -m pipelines.gpu_pack --pack .train/pack.npz --out .gpu/pack --part-mb 40

The device tool sends the repository's working tree and the carried paths, 64 MiB a call. The manifest's pack is
84 MB as ``np.savez_compressed``; re-coded slice by slice as lossless JPEG-LS (``pipelines.pack_coding``) it is
~55 MB, still more than one call leaves beside the tree. So the volumes are cut, in their order, into parts of at
most ``--part-mb``; ``load_pack(.gpu/pack)`` reads the folder's parts as the one pack (same volumes, same order, so
the same data order for a seed), and refuses a folder with a part missing. Each part is checked to decode to the
original values before it is kept. The report adds the tree (the shipped weights are most of it) and the wheels,
and names the weights files a training run does not read (CONTRIBUTING, "GPU runs", says how a call leaves them
behind and carries one part each).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipelines.pack_coding import CODING, encode_volume
from pipelines.prepare_data import load_pack, save_pack

TRAVEL_LIMIT = 64 * 2**20
ROOT = Path(__file__).resolve().parents[1]


def split_volumes(sizes: list[int], part_bytes: int) -> list[list[int]]:
    """Indices of consecutive volumes grouped into parts of at most ``part_bytes`` (a larger volume alone)."""
    parts: list[list[int]] = [[]]
    total = 0
    for i, n in enumerate(sizes):
        if parts[-1] and total + n > part_bytes:
            parts.append([])
            total = 0
        parts[-1].append(i)
        total += n
    return parts


def recode(src: Path, out: Path, part_bytes: int) -> dict:
    """Write ``src``'s volumes JPEG-LS coded into ``out/part-K.npz``; refuse (write nothing) unless the folder reads
    back as the same volumes, value for value, in the same order."""
    pack = load_pack(src)
    coded = {v.key: encode_volume(v.data) for v in pack.volumes}  # once: sizes the parts, then written
    groups = split_volumes([coded[v.key].nbytes for v in pack.volumes], part_bytes)
    names = [f"part-{k + 1}.npz" for k in range(len(groups))]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, idx in zip(names, groups):
        save_pack(tmp / name, [pack.volumes[i] for i in idx], val_source=pack.val_source, coding=CODING, parts=names,
                  coded=coded)
    back = load_pack(tmp)
    for a, b in zip(pack.volumes, back.volumes, strict=True):
        same = (a.key == b.key and a.split == b.split and a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)
                and a.keep.keys() == b.keep.keys() and all(np.array_equal(a.keep[k], b.keep[k]) for k in a.keep))
        if not same:
            shutil.rmtree(tmp)
            raise SystemExit(f"{out}: volume {a.key} does not decode to the original values; nothing written")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return {"volumes": len(pack.volumes), "source_bytes": src.stat().st_size,
            "parts": {n: (out / n).stat().st_size for n in names}}


def tracked_bytes(root: Path = ROOT) -> dict[str, int]:
    """Bytes of every file git tracks or would add (untracked, not ignored): what travels besides ``carry``."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.decode().split("\0")
    return {n: (root / n).stat().st_size for n in names if n and (root / n).is_file()}


def unused_weights(files: dict[str, int]) -> list[str]:
    """Shipped weights files a retrain does not read: all but the default (the warm candidate's start)."""
    return sorted(n for n in files if n.startswith("medsr/models/weights/") and n.endswith(".safetensors")
                  and not n.endswith("/medsr-srresnet-x4.safetensors"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, default=Path(".train/pack.npz"))
    ap.add_argument("--out", type=Path, default=Path(".gpu/pack"), help="folder of part-K.npz files")
    ap.add_argument("--part-mb", type=float, default=40.0, help="largest part, MB (default 40)")
    ap.add_argument("--wheels", type=Path, default=Path(".whl"), help="carried wheels folder (counted if present)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--unused-weights", action="store_true",
                    help="only print the tracked weights files a training run does not read (one per line)")
    a = ap.parse_args(argv)
    if a.unused_weights:
        print("\n".join(unused_weights(tracked_bytes())))
        return 0
    if not a.pack.is_file():
        print(f"error: {a.pack}: no pack (make it with python -m pipelines.prepare_data)", file=sys.stderr)
        return 2
    rep = recode(a.pack, a.out, int(a.part_mb * 1e6))
    files = tracked_bytes()
    unused = {n: files[n] for n in unused_weights(files)}
    wheels = sum(p.stat().st_size for p in a.wheels.glob("*.whl")) if a.wheels.is_dir() else 0
    tree = sum(files.values())
    lean = tree - sum(unused.values())
    largest = max(rep["parts"].values())
    rep.update(tree_bytes=tree, tree_without_unused_weights=lean, wheels_bytes=wheels, unused_weights=sorted(unused),
               limit_bytes=TRAVEL_LIMIT, largest_call_bytes=lean + wheels + largest,
               fits=lean + wheels + largest <= TRAVEL_LIMIT)
    if a.json:
        print(json.dumps(rep, indent=2))
    else:
        mb = 1e6
        coded = sum(rep["parts"].values())
        print(f"{a.out}: {rep['volumes']} volumes in {len(rep['parts'])} parts "
              f"({', '.join(f'{n} {b / mb:.1f} MB' for n, b in rep['parts'].items())}; {CODING}, {coded / mb:.1f} MB "
              f"in all; {a.pack} {rep['source_bytes'] / mb:.1f} MB); the parts read back as the same volumes")
        print(f"one call carries: tree {lean / mb:.1f} MB (without the {len(unused)} weights files training does not "
              f"read, {sum(unused.values()) / mb:.1f} MB; with them {tree / mb:.1f} MB) + wheels {wheels / mb:.1f} MB + "
              f"one part <= {largest / mb:.1f} MB = {rep['largest_call_bytes'] / mb:.1f} MB, limit "
              f"{TRAVEL_LIMIT / mb:.1f} MB: {'fits' if rep['fits'] else 'TOO LARGE (lower --part-mb)'}")
    return 0 if rep["fits"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Opens a ramba checkpoint with the Python `safetensors` package and checks it.

    pip install safetensors numpy
    python3 scripts/check_safetensors.py runs/NAME            # the checkpoint LATEST names
    python3 scripts/check_safetensors.py runs/NAME/checkpoints/step-00002000

Checks: the file loads; every tensor is float32 and finite; the token embedding is
[model.vocab_size, model.d_model] as in the run's config.toml. Prints each tensor's name and
shape. The same names and shapes are checked against the model on the Rust side by ramba-eval's
test `safetensors_header_matches_the_model`.
"""
import pathlib
import sys
import tomllib

import numpy as np
from safetensors.numpy import load_file


def main(arg: str) -> int:
    path = pathlib.Path(arg)
    if (path / "checkpoints" / "LATEST").exists():
        run = path
        path = path / "checkpoints" / (path / "checkpoints" / "LATEST").read_text().strip()
    else:
        run = path.parent.parent
    tensors = load_file(path / "model.safetensors")
    cfg = tomllib.loads((run / "config.toml").read_text())["model"]
    bad = []
    for name, t in sorted(tensors.items()):
        print(f"{name:60s} {list(t.shape)}")
        if t.dtype != np.float32:
            bad.append(f"{name}: dtype {t.dtype}, expected float32")
        elif not np.isfinite(t).all():
            bad.append(f"{name}: non-finite values")
    emb = [t for n, t in tensors.items() if "embedding" in n]
    want = (cfg.get("vocab_size", 50280), cfg.get("d_model", 1024))
    if not any(t.shape == want for t in emb):
        bad.append(f"no embedding of shape {list(want)} (model.vocab_size, model.d_model)")
    for b in bad:
        print("error:", b, file=sys.stderr)
    print(f"{len(tensors)} tensors, {sum(t.size for t in tensors.values())} parameters: "
          f"{'OK' if not bad else 'FAILED'}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))

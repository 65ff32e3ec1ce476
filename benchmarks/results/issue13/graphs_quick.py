"""One-clip generation with the bundled models, CUDA graphs off and on (issue 13, item 4; a first measurement).

Times ``generate`` of one item (the pipeline's default steps and guidance, decode included: Griffin-Lim for the
spoken digit, uint8 frames for the moving digit) after two warm-up calls, median of 5, synchronised; checks the
graphed latents against the eager ones for the same seed.

    python benchmarks/results/issue13/graphs_quick.py
"""

import statistics
import time

import torch

from multidiff.pipeline import load_pipeline

dev = torch.device("cuda")
for name in ("moving-digits", "spoken-digits"):
    pipe = load_pipeline(f"multidiff/models/{name}", device=dev)
    row = {}
    for graphs in (False, True):
        kw = dict(label=pipe.labels[3], seed=0, progress=False, graphs=graphs)
        decode = pipe.adapter.decode

        def keep(z, *a, _key=f"latents_{graphs}", _decode=decode, _row=row, **k):
            _row[_key] = z  # the latents of the first call, for the check
            return _decode(z, *a, **k)

        pipe.adapter.decode = keep
        pipe.generate(1, **kw)
        pipe.adapter.decode = decode
        pipe.generate(1, **kw)
        times = []
        for _ in range(5):
            torch.cuda.synchronize()
            t = time.perf_counter()
            pipe.generate(1, **kw)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        row[graphs] = statistics.median(times)
    diff = (row["latents_True"] - row["latents_False"]).abs().max().item()
    std = row["latents_False"].std().item()
    print(
        f"{name}: {pipe.sampling.steps} steps, guidance {pipe.sampling.guidance}: eager {row[False] * 1e3:.1f} ms, "
        f"graphs {row[True] * 1e3:.1f} ms ({row[False] / row[True]:.2f}x); max |graphed - eager| {diff:.2e} "
        f"(latent std {std:.2f}); peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB",
        flush=True,
    )

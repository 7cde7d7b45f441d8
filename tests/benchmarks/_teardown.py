"""The third side of the SDK-over-plain-script benchmarks (``bench_finetune_overhead``, ``bench_preference``).

``dsl`` ends without Python's interpreter teardown (``dsl.cli.run``): about 2 s once torch, transformers and TRL are
imported, which a plain script pays at exit. So each plain script also runs with ``--no-teardown``, ending in
``os._exit(0)`` after its work; the SDK's time over that side is what the SDK itself costs (the CLI, the plan, the
manifest, the charts, the model card), printed beside the ratio the target is about.
"""

from __future__ import annotations

NO_TEARDOWN = '''
if sys.argv[-1] == "--no-teardown":  # the same work, then the end without Python's teardown that `dsl` has
    sys.stdout.flush()
    sys.stderr.flush()
    import os
    os._exit(0)
'''


def own_cost_line(sdk_times: list[float], bare_times: list[float]) -> str:
    return (f"plain script ending in os._exit (no interpreter teardown): {', '.join(f'{t:.2f}s' for t in bare_times)}; "
            f"best {min(bare_times):.2f}s; dsl apply over it (the SDK's own cost): "
            f"{min(sdk_times) / min(bare_times):.3f}")

"""Backends that run steps. Modules here import heavy libraries only inside the functions that run a step."""

import logging

# bitsandbytes warns on every import on CPU machines that an optional kernels package is missing; the CPU path
# works without it, so the warning is noise in `dsl apply` output.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

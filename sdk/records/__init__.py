"""Typed records: what dsl writes to disk at run time and reads back, one pydantic model each, saved and loaded
through one place each and validated on load (a damaged file is an error naming the file and the field).

- :mod:`sdk.records.state`: a step's state entry (with its :class:`~sdk.records.state.Status`) and the state file
- :mod:`sdk.records.manifest`: an artifact's ``manifest.json``
- :mod:`sdk.records.serve`: the serve configuration ``serve.json`` (every serve default is stated there)
- :mod:`sdk.records.job`: a training job, as a launcher passes it to each process (``job.json``)
- :mod:`sdk.records.eval`: an eval's ``summary.json``

This package imports nothing of the project but :mod:`sdk.errors` (the spec reads the serve defaults from it)."""

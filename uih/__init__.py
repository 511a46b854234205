"""The ``uih`` application around the engine: the command line (``demo``, ``bench``, ``inspect``), the
synthetic workloads, the replay that builds a dataset and counts the bytes it writes, the measured
training jobs, the Fat Row baseline loader, OS I/O counters and report formatting.

It imports ``engine`` and ``dali_plugin`` like any user would; nothing in them imports it back.

- ``cli``: the ``uih`` command; ``demo``: ``uih demo``; ``report``: ``uih bench`` and REPORT.md
- ``workload``: synthetic multi-tenant workloads and small stores; ``replay``: a workload run through a
  store, bytes counted per day
- ``jobs``: one measured training job (late materialization or fat rows); ``fatrows``: the Fat Row
  loader; ``speed``: reconstruction speed against a memory copy and aten
- ``iostats``: ``/proc/self/io`` counters and page-cache drops; ``fmt``: tables, bytes, machine, JSON
"""

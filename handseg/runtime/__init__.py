"""Run-time plumbing every command shares: one-line errors (``errors``), typed YAML configs (``config_schema``) and
their command-line overrides (``overrides``: ``--set key.sub=value``), atomic files and folders (``atomic``,
``disk``, ``file_digest``), one run per output folder (``run_lock``), whether the GPUs a config asks for are usable
and the start line (``devices``), and how a run is launched under Accelerate (``launch_config`` picks the
Accelerate config, ``launcher`` runs ``accelerate launch`` so that signals and exit codes reach the user).

May import: nothing else of ``handseg`` (it is the bottom layer).
"""

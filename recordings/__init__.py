"""Call recordings: MixMonitor intake, conversion, storage.

- :mod:`recordings.intake`: find a call's MixMonitor file in the spool, wait until it is
  complete, and the :class:`~recordings.intake.RecordingJob` state machine with its retry
  schedule; :class:`~recordings.intake.RecordingProcessor` runs one step of a job;
  :func:`~recordings.intake.receive_upload` takes a file pushed by a remote PBX.
- :mod:`recordings.convert`: conversion (pydub, ffmpeg) and verification, run in workers.
- :mod:`recordings.pool`: the asyncio-friendly process pool around it.
- :mod:`recordings.storage`: the :class:`~recordings.storage.Storage` protocol, the local
  filesystem and an S3-compatible backend.
- :mod:`recordings.errors`: typed errors with stable ``error_id`` values.

The metadata table, HTTP endpoints, retention purge and wiring live in ``contact_center``.
"""

"""Call recordings: MixMonitor intake, conversion, storage and retention."""

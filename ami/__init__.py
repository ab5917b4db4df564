"""Asterisk AMI adapter: pure framing (:mod:`ami.frames`), the pure call fold
(:mod:`ami.fold`) and capture replay (:mod:`ami.replay`)."""

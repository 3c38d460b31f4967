"""Start, secure, drive and stop a real Flower federation on this machine (``fleet run``)."""

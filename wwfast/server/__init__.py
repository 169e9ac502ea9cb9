"""The serve stage's parts: HTTP and TFTP protocols, node status, metrics."""

"""The compress stage's library: build outputs in, a content-addressed store and the manifest naming it out.

    build_outputs  what build.json says to publish, and whether it moved since (stat keys)
    store          the store files: hashed, compressed or linked, named by their content
    manifest       the published manifest: reading it, the files it names, making it
    garbage        store files no manifest names any more, after a grace period
    publisher      one publish run, in the order that keeps it crash safe
"""


class PublishError(Exception):
    """The build outputs cannot be published as they are (message says which file and why)."""

"""The host files: the thin code a host (the Pipelines server, Open WebUI Functions) loads.

Each module here is a complete, importable host file whose docstring is its frontmatter.
``helix-pipeline bundle`` (:mod:`helix_pipeline.bundle`) turns each one into a self-contained file
that carries the library; the bundles in the repository's ``pipelines/`` folder are built from them.
"""

__all__: list[str] = []

"""Import the library a bundle carries as source text, under that bundle's own package name.

``helix-pipeline bundle`` copies this module's code into every bundle it writes (see
:mod:`helix_pipeline.bundle`), followed by a dict of the library's sources and one call to
:func:`load_embedded`. The sources are compiled from memory: nothing is written to disk, and
nothing relies on ``__file__`` (Open WebUI execs a Function's text without one).

Version policy: every build has a package name of its own, ``helix_pipeline__<version>__<hash>``
(the hash covers every embedded source), so a bundle always runs exactly the library it carries.
An installed ``helix_pipeline`` of any version is never imported by a bundle, and an older bundle
still loaded in the same process keeps its own copy. Two files of the same build (the pipe and the
filter built together) share one copy: the second finds the first's package in ``sys.modules``.
The log says which copy a file runs, once per load.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType

__all__ = ["EmbeddedLibrary", "load_embedded"]


class EmbeddedLibrary(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """A finder and loader for one package whose modules are given as source strings.

    ``sources`` maps a path inside the library (``helix_pipeline/stores/__init__.py``) to its text;
    the modules are importable as ``package`` and ``package.<dotted path>``.
    """

    def __init__(self, package: str, sources: Mapping[str, str]) -> None:
        self.package = package
        self._sources: dict[str, str] = {}
        self._packages: set[str] = set()
        self._paths: dict[str, str] = {}
        for path, text in sources.items():
            parts = path.removesuffix(".py").split("/")[1:]
            if parts and parts[-1] == "__init__":
                parts.pop()
                self._packages.add(".".join([package, *parts]))
            name = ".".join([package, *parts])
            self._sources[name] = text
            self._paths[name] = path

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in self._sources:
            return None
        return importlib.util.spec_from_loader(
            fullname, self, origin=self._filename(fullname), is_package=self.is_package(fullname)
        )

    def is_package(self, fullname: str) -> bool:
        return fullname in self._packages

    def get_source(self, fullname: str) -> str:
        try:
            return self._sources[fullname]
        except KeyError:
            raise ImportError(f"{fullname} is not embedded here", name=fullname) from None

    def get_code(self, fullname: str) -> CodeType:
        return compile(
            self.get_source(fullname), self._filename(fullname), "exec", dont_inherit=True
        )

    def _filename(self, fullname: str) -> str:
        """What tracebacks show; not ``<...>``, so that they can show the source lines too."""
        return f"{self._paths[fullname]} (embedded as {self.package})"


def load_embedded(package: str, version: str, label: str, sources: Mapping[str, str]) -> ModuleType:
    """The library ``package`` of this bundle, imported from ``sources`` unless already loaded."""
    log = logging.getLogger(package)
    loaded = sys.modules.get(package)
    if loaded is not None:
        log.info(
            "%s runs helix-pipeline %s embedded in it, shared with another file of the same "
            "build already loaded (%s)",
            label,
            version,
            package,
        )
        return loaded
    if not any(getattr(finder, "package", None) == package for finder in sys.meta_path):
        sys.meta_path.insert(0, EmbeddedLibrary(package, sources))
    module = importlib.import_module(package)
    log.info(
        "%s runs helix-pipeline %s embedded in it (%s)%s",
        label,
        version,
        package,
        _installed_note(version),
    )
    return module


def _installed_note(version: str) -> str:
    """A note for the log when an installed ``helix_pipeline`` is present (bundles never use it)."""
    if importlib.util.find_spec("helix_pipeline") is None:
        return ""
    try:
        installed = importlib.metadata.version("helix-pipeline")
    except importlib.metadata.PackageNotFoundError:
        installed = "of unknown version"
    same = " (the same version)" if installed == version else ""
    return f"; the installed helix_pipeline {installed}{same} is not used by this file"

"""botocore's data files (service models, endpoint rules), read once per process and
quickly: every processor, runtime and command reads them when it makes its first client,
and botocore's own loader spent a tenth of a second of CPU on it per process.

Two things made it slow, and neither changes what is read:

* the standard library's JSON parser, on megabytes of JSON: msgspec (already the
  processor's decoder) parses the same files in a third of the time;
* the check that a service exists, which lists every service botocore knows (hundreds
  of directories, each read and stat'ed) before each kind of file is loaded: here it
  looks in the one service's directory.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Iterator, Sequence
from typing import IO, Any

import botocore.exceptions
import botocore.loaders
import msgspec

# What botocore ships its files as, in the order botocore's own loader tries them.
_OPENERS: tuple[tuple[str, Any], ...] = ((".json", open), (".json.gz", gzip.open))


class _FileLoader(botocore.loaders.JSONFileLoader):
    """botocore's JSON file loader with msgspec as the parser. botocore asked the standard
    library for ordered dicts, which every dict is."""

    def load_file(self, file_path: str) -> Any:
        for extension, opener in _OPENERS:
            full_path = file_path + extension
            if os.path.isfile(full_path):
                file: IO[bytes]
                with opener(full_path, "rb") as file:
                    return msgspec.json.decode(file.read())
        return None


class _KnownServices(Sequence[str]):
    """The services that have a ``type_name`` file, as botocore's loader asks for them
    before it loads one: whether a service is among them is answered from that service's
    own directory; anything else (listing them for an unknown service's error, indexing)
    reads every one, as botocore's list does."""

    def __init__(self, loader: _Loader, type_name: str) -> None:
        self._loader = loader
        self._type_name = type_name

    def __contains__(self, service: object) -> bool:
        if (
            not isinstance(service, str)
            or not service
            or service.startswith(".")
            or os.sep in service
        ):
            return False
        try:
            return bool(self._loader.list_api_versions(service, self._type_name))
        except botocore.exceptions.DataNotFoundError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._loader.every_service(self._type_name))

    def __len__(self) -> int:
        return len(self._loader.every_service(self._type_name))

    def __getitem__(self, index: Any) -> Any:
        return self._loader.every_service(self._type_name)[index]


class _Loader(botocore.loaders.Loader):
    def list_available_services(self, type_name: str) -> Any:
        return _KnownServices(self, type_name)

    def every_service(self, type_name: str) -> list[str]:
        listed: list[str] = super().list_available_services(type_name)
        return listed


@functools.cache
def data_loader(data_path: str | None) -> botocore.loaders.Loader:
    """One loader for every session of this process with the same ``data_path`` (from
    ``AWS_DATA_PATH`` or the config file, as botocore's loader takes it). A session with
    a loader of its own parses the service's model again for each client: about a tenth
    of a second of CPU per client, paid by every tool, runtime and processor that makes a
    client per destination, table or segment. The files are only read, so sharing their
    parsed form changes nothing else; credentials, region and configuration stay per
    session."""
    paths = [
        os.path.expandvars(os.path.expanduser(path))
        for path in (data_path or "").split(os.pathsep)
        if path
    ]
    return _Loader(extra_search_paths=paths, file_loader=_FileLoader())

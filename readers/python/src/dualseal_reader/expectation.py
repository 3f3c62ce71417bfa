"""What a reader expects of an object, and the location map that says it.

``dualsealctl mapping JOB --format json`` writes one JSON object per line::

    {"source_bucket": "master", "source_key": "db/payments.json", "source_version": "",
     "destination_bucket": "secrets-db", "destination_key": "payments.json", "category": "db",
     "kms_key_arn": "arn:aws:kms:...:key/...", "envelope_version": 1}

:class:`LocationMap` loads it (a JSON array of the same objects is accepted too);
:meth:`Expectation.from_mapping` looks one location up in it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import IO, Dict, Iterable, Iterator, Mapping, Tuple, TypeVar, Union

from .errors import ExpectationError

PathOrFile = Union[str, "os.PathLike[str]", IO[str]]


@dataclass(frozen=True)
class Expectation:
    """The category a location belongs to and that category's KMS key ARN: both layers of the
    object must be under this key, and its envelope of this category. ``dualsealctl mapping``
    (or the daemon's config) names both.

    :raises ExpectationError: an empty category or key.
    """

    category: str
    kms_key_arn: str

    def __post_init__(self) -> None:
        if not isinstance(self.category, str) or not self.category:
            raise ExpectationError("Expectation needs the category name the location belongs to")
        if not isinstance(self.kms_key_arn, str) or not self.kms_key_arn:
            raise ExpectationError("Expectation needs the category's KMS key ARN")

    @classmethod
    def from_mapping(cls, mapping: Union[PathOrFile, "LocationMap"], bucket: str, key: str) -> "Expectation":
        """The expectation for ``s3://bucket/key`` (a destination location) from a location
        map file (path or open text file) or a loaded :class:`LocationMap`.

        :raises ExpectationError: the map does not name the location, or names it twice with
            different answers, or is not a location map.
        """
        m = mapping if isinstance(mapping, LocationMap) else LocationMap.load(mapping)
        return m.expectation(bucket, key)


@dataclass(frozen=True)
class Location:
    """Where a secret lives now, and what to expect of it there."""

    bucket: str
    key: str
    expect: Expectation


class LocationMap:
    """A loaded location map: destination location -> :class:`Expectation`, and source location
    -> new :class:`Location` (for applications that still know the old address)."""

    def __init__(self, entries: Iterable[Mapping[str, object]]) -> None:
        self._by_dest: Dict[Tuple[str, str], Expectation] = {}
        self._by_source: Dict[Tuple[str, str], Location] = {}
        for n, e in enumerate(entries, 1):
            try:
                dest = (_field(e, "destination_bucket"), _field(e, "destination_key"))
                exp = Expectation(_field(e, "category"), _field(e, "kms_key_arn"))
                src = (_field(e, "source_bucket"), _field(e, "source_key"))
            except ExpectationError as err:
                raise ExpectationError(f"location map entry {n}: {err}") from None
            _put(self._by_dest, dest, exp, n)
            _put(self._by_source, src, Location(dest[0], dest[1], exp), n)

    @classmethod
    def load(cls, mapping: PathOrFile) -> "LocationMap":
        """Reads a map written by ``dualsealctl mapping --format json`` (JSON lines, or a JSON
        array).

        :raises ExpectationError: not a location map.
        :raises OSError: the file cannot be read.
        """
        if isinstance(mapping, (str, os.PathLike)):
            with open(mapping, encoding="utf-8") as f:
                text = f.read()
        else:
            text = mapping.read()
        return cls(_entries(text))

    def expectation(self, bucket: str, key: str) -> Expectation:
        """The expectation for destination ``s3://bucket/key``.

        :raises ExpectationError: the map does not name it.
        """
        try:
            return self._by_dest[(bucket, key)]
        except KeyError:
            raise ExpectationError(f"the location map does not name s3://{bucket}/{key}") from None

    def for_source(self, bucket: str, key: str) -> Location:
        """Where the secret that lived at source ``s3://bucket/key`` lives now.

        :raises ExpectationError: the map does not name it.
        """
        try:
            return self._by_source[(bucket, key)]
        except KeyError:
            raise ExpectationError(f"the location map does not name source s3://{bucket}/{key}") from None

    def __len__(self) -> int:
        return len(self._by_dest)

    def __iter__(self) -> Iterator[Location]:
        for (b, k), e in self._by_dest.items():
            yield Location(b, k, e)


V = TypeVar("V")


def _put(table: Dict[Tuple[str, str], V], k: Tuple[str, str], v: V, n: int) -> None:
    old = table.get(k)
    if old is not None and old != v:
        raise ExpectationError(f"location map entry {n}: s3://{k[0]}/{k[1]} appears twice with different answers")
    table[k] = v


def _field(e: Mapping[str, object], name: str) -> str:
    v = e.get(name) if isinstance(e, Mapping) else None
    if not isinstance(v, str) or not v:
        raise ExpectationError(f"no {name}")
    return v


def _entries(text: str) -> Iterator[Mapping[str, object]]:
    stripped = text.lstrip()
    try:
        if stripped.startswith("["):
            data = json.loads(stripped)
            if not isinstance(data, list):
                raise ExpectationError("a location map is a JSON array or JSON lines")
            yield from data
            return
        for line in text.splitlines():
            if line.strip():
                yield json.loads(line)
    except json.JSONDecodeError as err:
        raise ExpectationError(
            f"not a location map (dualsealctl mapping --format json writes one): line {err.lineno}"
        ) from None

"""A zip reader in bounded memory: the central directory is streamed one entry at a time.

`zipfile.ZipFile` builds a `ZipInfo` for every entry before anything can be checked, so a small
hostile archive with hundreds of thousands of entries costs hundreds of MiB. Here the caller sees
each entry as it is read and can stop at its limits; members are decompressed in chunks (stored,
deflate, bzip2, lzma) with their CRC checked. Every malformation raises `ZipFormatError`.
"""

from __future__ import annotations

import bz2
import io
import lzma
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK = 1024 * 1024

_EOCD = struct.Struct("<4s4H2LH")  # end of central directory
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_LOCAL = struct.Struct("<4s5H3L2H")
_MAX_COMMENT = 0xFFFF

STORED, DEFLATED, BZIP2, LZMA = 0, 8, 12, 14
FLAG_ENCRYPTED = 0x1
FLAG_PATCHED = 0x20
FLAG_STRONG_ENCRYPTION = 0x40
FLAG_UTF8 = 0x800


class ZipFormatError(Exception):
    """The file is not a zip archive or is damaged; the message says where."""


@dataclass(frozen=True, slots=True)
class Member:
    """One central directory entry (what the archive claims; sizes are not trusted)."""

    name: str
    flags: int
    method: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int
    external_attr: int

    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True)
class Directory:
    """Where the central directory is, and how many entries the archive declares."""

    offset: int
    size: int
    declared_entries: int
    shift: int  # bytes prepended to the archive (self-extracting stubs)


def find_directory(handle: BinaryIO) -> Directory:
    """Locate the central directory from the end-of-directory record (zip64 included)."""
    end = handle.seek(0, io.SEEK_END)
    tail_start = max(0, end - _EOCD.size - _MAX_COMMENT)
    handle.seek(tail_start)
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise ZipFormatError("no end of central directory record")
    _, _, _, _, entries, size, offset, _ = _EOCD.unpack_from(tail, at)
    eocd_pos = tail_start + at
    locator_pos = eocd_pos - _ZIP64_LOCATOR.size
    if locator_pos >= 0:
        handle.seek(locator_pos)
        locator = handle.read(_ZIP64_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            # The record sits just before its locator (read where it is, not where the locator
            # says, so bytes prepended to the archive do not matter; zipfile does the same).
            zip64_pos = locator_pos - _ZIP64_EOCD.size
            handle.seek(max(0, zip64_pos))
            record = handle.read(_ZIP64_EOCD.size)
            if len(record) < _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
                raise ZipFormatError("bad zip64 end of central directory record")
            _, _, _, _, _, _, _, entries, size, offset = _ZIP64_EOCD.unpack(record)
            eocd_pos = zip64_pos
    shift = eocd_pos - size - offset
    if shift < 0 or offset + shift > end:
        raise ZipFormatError("central directory outside the file")
    return Directory(offset=offset + shift, size=size, declared_entries=entries, shift=shift)


def _zip64(extra: bytes, size: int, compressed: int, offset: int) -> tuple[int, int, int]:
    """Sizes and offset from the zip64 extra field, for the fields saturated at 0xFFFFFFFF."""
    pos = 0
    while pos + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, pos)
        body = extra[pos + 4 : pos + 4 + length]
        if kind == 0x0001:
            values = [v[0] for v in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
            fields = [size, compressed, offset]
            for i, field in enumerate(fields):
                if field == 0xFFFFFFFF:
                    if not values:
                        raise ZipFormatError("truncated zip64 extra field")
                    fields[i] = values.pop(0)
            return fields[0], fields[1], fields[2]
        pos += 4 + length
    return size, compressed, offset


def members(handle: BinaryIO, directory: Directory) -> Iterator[Member]:
    """The central directory entries in order, read one at a time (bounded memory)."""
    handle.seek(directory.offset)
    stream = io.BufferedReader(_Window(handle, directory.offset, directory.size), CHUNK)
    while True:
        fixed = stream.read(_CENTRAL.size)
        if not fixed:
            return
        if len(fixed) < _CENTRAL.size or fixed[:4] != b"PK\x01\x02":
            raise ZipFormatError("bad central directory entry")
        fields = _CENTRAL.unpack(fixed)
        flags, method, crc, compressed, size = fields[3], fields[4], *fields[7:10]
        name_len, extra_len, comment_len = fields[10:13]
        external_attr, offset = fields[15:17]
        raw_name = stream.read(name_len)
        extra = stream.read(extra_len)
        if len(raw_name) < name_len or len(extra) < extra_len:
            raise ZipFormatError("truncated central directory")
        stream.read(comment_len)
        try:
            name = raw_name.decode("utf-8" if flags & FLAG_UTF8 else "cp437")
        except UnicodeDecodeError:
            raise ZipFormatError(f"file name is not valid UTF-8: {raw_name[:100]!r}") from None
        size, compressed, offset = _zip64(extra, size, compressed, offset)
        yield Member(
            name=name,
            flags=flags,
            method=method,
            crc=crc,
            compressed_size=compressed,
            size=size,
            header_offset=offset + directory.shift,
            external_attr=external_attr,
        )


class _Window(io.RawIOBase):
    """A read-only view of `size` bytes of `handle` from `start` (the central directory)."""

    def __init__(self, handle: BinaryIO, start: int, size: int) -> None:
        self.handle, self.pos, self.left = handle, start, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self.left <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        self.handle.seek(self.pos)
        data = self.handle.read(min(len(view), self.left))
        view[: len(data)] = data
        self.pos += len(data)
        self.left -= len(data)
        return len(data)


class _Decompressor(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...


class _Stored:
    def feed(self, data: bytes) -> Iterator[bytes]:
        if data:
            yield data


class _Deflate:
    def __init__(self) -> None:
        self.inner = zlib.decompressobj(-15)

    def feed(self, data: bytes) -> Iterator[bytes]:
        # max_length bounds each output; what is left stays in unconsumed_tail (or in zlib's
        # state when the output was exactly full, hence the extra round with no input).
        while True:
            out = self.inner.decompress(data, CHUNK)
            data = self.inner.unconsumed_tail
            if out:
                yield out
            if self.inner.eof or (not data and len(out) < CHUNK):
                return


class _Bounded:
    """bz2 and lzma decompressors share `decompress(data, max_length)` and `needs_input`."""

    def __init__(self, inner: bz2.BZ2Decompressor | lzma.LZMADecompressor) -> None:
        self.inner = inner

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self.inner.eof:
            return
        out = self.inner.decompress(data, CHUNK)
        if out:
            yield out
        while not self.inner.eof and not self.inner.needs_input:
            out = self.inner.decompress(b"", CHUNK)
            if out:
                yield out


def _lzma(header: bytes) -> _Bounded:
    # Zip's LZMA: 2-byte version, 2-byte properties size, then the LZMA1 properties
    # (lc/lp/pb in one byte, dictionary size in four) before the raw stream.
    if len(header) < 9:
        raise ZipFormatError("truncated lzma header")
    (props_size,) = struct.unpack_from("<H", header, 2)
    if props_size != 5:
        raise ZipFormatError("unsupported lzma properties")
    byte, dict_size = header[4], struct.unpack_from("<L", header, 5)[0]
    lc, rest = byte % 9, byte // 9
    lp, pb = rest % 5, rest // 5
    filters = [{"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}]
    return _Bounded(lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters))


def read_chunks(handle: BinaryIO, member: Member) -> Iterator[bytes]:
    """The member's decompressed bytes in chunks of at most CHUNK; the CRC is checked at the end."""
    handle.seek(member.header_offset)
    fixed = handle.read(_LOCAL.size)
    if len(fixed) < _LOCAL.size or fixed[:4] != b"PK\x03\x04":
        raise ZipFormatError(f"bad local header for {member.name!r}")
    name_len, extra_len = _LOCAL.unpack(fixed)[-2:]
    handle.seek(member.header_offset + _LOCAL.size + name_len + extra_len)
    left = member.compressed_size
    decoder: _Decompressor
    if member.method == STORED:
        decoder = _Stored()
    elif member.method == DEFLATED:
        decoder = _Deflate()
    elif member.method == BZIP2:
        decoder = _Bounded(bz2.BZ2Decompressor())
    elif member.method == LZMA:
        header = handle.read(min(left, 9))
        left -= len(header)
        decoder = _lzma(header)
    else:
        raise ZipFormatError(f"unsupported compression method {member.method}: {member.name!r}")
    crc = 0
    try:
        while left > 0:
            data = handle.read(min(CHUNK, left))
            if not data:
                raise ZipFormatError(f"truncated data of {member.name!r}")
            left -= len(data)
            for out in decoder.feed(data):
                crc = zlib.crc32(out, crc)
                yield out
    except (zlib.error, lzma.LZMAError, EOFError, ValueError) as exc:
        raise ZipFormatError(f"damaged data of {member.name!r} ({type(exc).__name__})") from None
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error of the server, not the archive's fault
            raise
        # bz2 reports bad data as an OSError without errno
        raise ZipFormatError(f"damaged data of {member.name!r} ({exc})") from None
    if crc != member.crc:
        raise ZipFormatError(f"bad CRC-32 for {member.name!r}")

"""The DALI webdataset index (`.idx`): written with each shard, read back as DALI reads it.

    v1.2 N                                        header: format version, sample count
    cls 512 1 KEY.cls jpg 1536 1082 KEY.jpg ...   one line a sample: ext offset size name

DALI splits every line at white space and reads the fields four at a time, so a name with
a space shifts all later fields: keys must hold no white space (nor dots, which end a key).
`parse_index` applies DALI's rules (and ours: one key a line) so `--verify` catches an
index DALI would refuse, or misread, before a training job reaches it.
"""

from __future__ import annotations

import re

INDEX_VERSION = "v1.2"  # the format DALI's wds2idx writes and fn.readers.webdataset reads
TAR_BLOCK = 512
UNSAFE_IN_KEY = re.compile(r"[.\s]")  # a dot ends a key; white space splits an index line


class MalformedIndex(ValueError):
    """The index breaks the format; the message names the line and what is wrong."""


def index_text(lines: list[str]) -> str:
    """The whole index: the header, then the sample lines (each ends in a newline)."""
    return f"{INDEX_VERSION} {len(lines)}\n" + "".join(lines)


def sample_line(members: list[tuple[str, int, int, str]]) -> str:
    """One sample's line from its (ext, offset, size, name) members."""
    return " ".join(f"{ext} {offset} {size} {name}" for ext, offset, size, name in members) + "\n"


def parse_index(text: str) -> list[list[tuple[str, int, int, str]]]:
    """Each sample's (ext, offset, size, name) members; raises MalformedIndex where DALI would
    fail or read a different sample than the writer meant."""
    header, *lines = text.split("\n")
    fields = header.split()
    if len(fields) != 2 or fields[0] != INDEX_VERSION or not fields[1].isdigit():
        raise MalformedIndex(f"line 0: header is '{header}', expected '{INDEX_VERSION} N'")
    count = int(fields[1])
    if count < 1:
        raise MalformedIndex("line 0: DALI refuses an index of 0 samples")
    if len(lines) < count or any(line.strip() for line in lines[count:]):
        raise MalformedIndex(f"header says {count} samples, the file has "
                          f"{sum(1 for line in lines if line.strip())} sample lines")
    return [_parse_line(n, line) for n, line in enumerate(lines[:count], start=1)]


def _parse_line(number: int, line: str) -> list[tuple[str, int, int, str]]:
    fields = line.split()
    if not fields or len(fields) % 4:
        raise MalformedIndex(f"line {number}: {len(fields)} fields, not 'ext offset size name' "
                          "groups of four (a space in a file name?)")
    members = []
    for i in range(0, len(fields), 4):
        ext, offset, size, name = fields[i:i + 4]
        if not (offset.isdigit() and size.isdigit()) or int(offset) % TAR_BLOCK:
            raise MalformedIndex(f"line {number}: offset '{offset}' and size '{size}' must be "
                              f"whole numbers, the offset a multiple of {TAR_BLOCK}")
        members.append((ext, int(offset), int(size), name))
    key = members[0][3].split(".", 1)[0]
    if any(name != f"{key}.{ext}" for ext, _, _, name in members):
        raise MalformedIndex(f"line {number}: names {[m[3] for m in members]} are not one key "
                          "with each member's extension")
    return members

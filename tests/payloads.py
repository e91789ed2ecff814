"""Bytes the module reads from outside, built independently of it: DUMP frames (with their
CRC-64/Jones), the session and semantic-cache payloads of `_LOAD`/RDB, and archive segments.
Used by the hardening and fuzz tests to hand the server exactly the bytes they mean to."""
import struct
import zlib

# ---------------------------------------------------------------------------------------------
# DUMP frames: value, 2-byte RDB version, CRC-64/Jones (reflected, little-endian) of both.

_POLY = 0x95AC9329AC4BC9B5  # 0xAD93D23594C935A9 reflected
_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ _POLY if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc64(data):
    c = 0
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c


assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA


def seal(body_and_version):
    """A DUMP payload: the bytes given (value + RDB version) and their CRC."""
    return body_and_version + struct.pack("<Q", crc64(body_and_version))


def split_dump(payload):
    """(value, 2-byte RDB version) of a DUMP payload whose CRC is right."""
    assert crc64(payload[:-8]) == struct.unpack("<Q", payload[-8:])[0]
    return payload[:-10], payload[-10:-8]


def _read_len(b, i):
    t = b[i] >> 6
    if t == 0:
        return b[i] & 0x3F, i + 1
    if t == 1:
        return ((b[i] & 0x3F) << 8) | b[i + 1], i + 2
    if b[i] == 0x80:
        return struct.unpack(">I", b[i + 1:i + 5])[0], i + 5
    if b[i] == 0x81:
        return struct.unpack(">Q", b[i + 1:i + 9])[0], i + 9
    raise ValueError(f"encoded string {b[i]:#x} (is rdbcompression off?)")


def rdb_len(n):
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    if n < 1 << 32:
        return b"\x80" + struct.pack(">I", n)
    return b"\x81" + struct.pack(">Q", n)


OPCODE_EOF, OPCODE_STRING = 0, 5


def parse_module_value(value):
    """(prefix, [strings]) of a module value saved with string buffers only (rdbcompression
    off, so no string is LZF-compressed). The prefix is the type byte and the module id."""
    _, i = _read_len(value, 1)
    prefix, strings = value[:i], []
    while value[i] == OPCODE_STRING:
        n, i = _read_len(value, i + 1)
        strings.append(value[i:i + n])
        i += n
    assert value[i:] == bytes([OPCODE_EOF]), value[i:]
    return prefix, strings


def module_value(prefix, strings):
    out = bytearray(prefix)
    for s in strings:
        out += bytes([OPCODE_STRING]) + rdb_len(len(s)) + s
    out.append(OPCODE_EOF)
    return bytes(out)


def dump_of(prefix, strings, version):
    return seal(module_value(prefix, strings) + version)


# ---------------------------------------------------------------------------------------------
# Session payloads (src/conv/codec.rs, version 2)

def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def lp(b):
    return varint(len(b)) + b


def turn(seq, content=b"x", role=b"user", ts=1000, meta=None, emb=None, flags=None):
    meta = meta.encode() if isinstance(meta, str) else meta
    content = content.encode() if isinstance(content, str) else content
    role = role.encode() if isinstance(role, str) else role
    if flags is None:
        flags = (1 if meta is not None else 0) | (2 if emb is not None else 0)
    out = varint(seq) + struct.pack("<q", ts) + lp(role) + lp(content) + bytes([flags])
    if meta is not None:
        out += lp(meta)
    if emb is not None:
        out += varint(len(emb)) + struct.pack(f"<{len(emb)}f", *emb)
    return out


def _leading_varint(b):
    v, shift = 0, 0
    for x in b:
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            break
    return v


def session_payload(turns, window=5, next_seq=None, created=1000, last_access=1000,
                    archived=(0, 0, 0), archive_upto=0, auto_expire=0, sid=7):
    """A whole session of encoded `turns`; next_seq defaults to one past the last turn."""
    if next_seq is None:
        next_seq = max([_leading_varint(t) for t in turns] + [archived[2]]) + 1
    out = bytes([2, 0]) + varint(window) + varint(next_seq)
    out += struct.pack("<qq", created, last_access)
    out += varint(archived[0]) + varint(archived[1]) + varint(archived[2])
    out += varint(archive_upto) + struct.pack("<qQ", auto_expire, sid)
    return out + varint(len(turns)) + b"".join(turns)


def more_payload(turns):
    return bytes([2, 1]) + varint(len(turns)) + b"".join(turns)


def archived_payload(turns):
    """Archived turns of a session being rebuilt (codec version 3, kind 2)."""
    return bytes([3, 2]) + varint(len(turns)) + b"".join(turns)


# ---------------------------------------------------------------------------------------------
# Semantic-cache payloads (src/semcache/codec.rs, version 1)

def sc_header(dim, max_items, next_id, count, hits=0, misses=0):
    return bytes([1, 0]) + b"".join(varint(v) for v in (dim, max_items, next_id, hits, misses, count))


def sc_entries(entries, next_id=0):
    """entries: (id, row floats, response bytes, meta str or None, expire_at_ms)."""
    out = bytes([1, 1]) + varint(next_id) + varint(len(entries))
    for eid, row, resp, meta, exp in entries:
        out += varint(eid) + struct.pack("<q", exp) + lp(resp)
        out += b"\x00" if meta is None else b"\x01" + lp(meta.encode())
        out += lp(struct.pack(f"<{len(row)}f", *row))
    return out


# ---------------------------------------------------------------------------------------------
# Archive files (src/archive/format.rs): header then segments: SEG1 (40-byte header, Huffman)
# or SEG2 (52-byte header with codec and dictionary id); header CRC32 in the last 4 bytes.
SEGMENT_HEADER_LEN = {b"SEG1": 40, b"SEG2": 52}


def archive_header_len(data):
    return 20 + struct.unpack("<I", data[16:20])[0] + 4


def archive_segments(data):
    """[(offset, payload length, header length)] of the segments of an archive file."""
    out, off = [], archive_header_len(data)
    while data[off:off + 4] in SEGMENT_HEADER_LEN:
        hlen = SEGMENT_HEADER_LEN[bytes(data[off:off + 4])]
        if off + hlen > len(data):
            break
        comp = struct.unpack("<I", data[off + 28:off + 32])[0]
        out.append((off, comp, hlen))
        off += hlen + comp
    return out


def fix_archive_crcs(data, segments):
    """Recomputes the payload and header CRC32 of the given segments (after an edit), so
    the damage reaches the codec and turn decoders instead of stopping at a checksum."""
    data = bytearray(data)
    for off, comp, hlen in segments:
        if off + hlen + comp > len(data):
            continue
        payload = bytes(data[off + hlen:off + hlen + comp])
        data[off + 32:off + 36] = struct.pack("<I", zlib.crc32(payload))
        crc_at = hlen - 4
        data[off + crc_at:off + hlen] = struct.pack("<I", zlib.crc32(bytes(data[off:off + crc_at])))
    return bytes(data)

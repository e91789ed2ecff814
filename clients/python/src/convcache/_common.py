"""Pieces every convcache client shares: exceptions, vector encoding, reply parsing.

Replies are parsed the same way whatever the protocol: RESP2 flat arrays and RESP3 maps give
the same dicts; integers, bulk strings and doubles come out as int, str/bytes and float.
"""
from __future__ import annotations

import inspect
import json
import struct
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import redis

try:  # numpy is optional: vectors may be lists of floats or bytes without it.
    import numpy as _np
except ImportError:  # pragma: no cover - exercised only without numpy
    _np = None

try:  # orjson parses the JSON replies (CONV.CTX/HISTORY FORMAT full) ~5x faster than json.
    import orjson as _orjson

    loads = _orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    loads = json.loads

Vector = Union[bytes, bytearray, memoryview, Sequence[float], "Any"]  # Any: numpy array


class ConvcacheError(redis.exceptions.ResponseError):
    """An error reply from a convcache command (bad argument, bad vector, archive damage...).

    A subclass of redis-py's ``ResponseError``, so existing ``except ResponseError`` clauses
    keep working. The server changed nothing when it answered an error."""


class WrongTypeError(ConvcacheError):
    """The key holds another type (``WRONGTYPE``): e.g. CONV.ADD on a string key."""


class ModuleNotLoadedError(ConvcacheError):
    """The server does not know the command: the convcache module is not loaded there."""


def translate_error(e: redis.exceptions.ResponseError) -> redis.exceptions.ResponseError:
    """Maps a plain ResponseError to the convcache exception it stands for. Subclasses that
    redis-py already distinguishes (READONLY, MOVED, ...) are returned unchanged."""
    if type(e) is not redis.exceptions.ResponseError:
        return e
    msg = str(e)
    if msg.startswith("WRONGTYPE"):
        cls = WrongTypeError
    elif msg.lower().startswith("unknown command") and ("conv." in msg.lower()
                                                      or "semcache." in msg.lower()
                                                      or "urlemb." in msg.lower()):
        cls = ModuleNotLoadedError
        msg = f"the convcache module is not loaded on this server ({msg})"
    else:
        cls = ConvcacheError
    return cls(msg)


def is_async_client(client: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(client, "execute_command", None))


def connect(redis_url: Optional[str], redis_client: Any, connection_args: Optional[Dict[str, Any]],
            *, asynchronous: bool, wrong_kind: str) -> Tuple[Any, bool]:
    """The client a LangGraph class talks through, and whether it made (and so owns) it: the
    one given, or one made from `redis_url`. A sync class refuses an async client and the
    reverse, with `wrong_kind` as the message."""
    if redis_client is None:
        if redis_url is None:
            raise ValueError("give redis_url or redis_client")
        if asynchronous:
            import redis.asyncio as aredis
            return aredis.Redis.from_url(redis_url, **(connection_args or {})), True
        return redis.Redis.from_url(redis_url, **(connection_args or {})), True
    if is_async_client(redis_client) != asynchronous:
        raise TypeError(wrong_kind)
    return redis_client, False


def decodes_responses(client: Any) -> bool:
    """True if the redis-py client was made with ``decode_responses=True``."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if kwargs is not None:
        return bool(kwargs.get("decode_responses"))
    nodes = getattr(client, "nodes_manager", None)  # RedisCluster
    kwargs = getattr(nodes, "connection_kwargs", None) or {}
    return bool(kwargs.get("decode_responses"))


def is_cluster_client(client: Any) -> bool:
    return hasattr(client, "nodes_manager") and hasattr(client, "keyslot")


# ------------------------------------------------------------------------------------------
# Vectors

def vector_bytes(v: Vector, what: str = "vector") -> bytes:
    """float32 little-endian bytes of a vector given as bytes, a numpy array (any float
    dtype, one dimension) or a sequence of numbers. The server checks NaN/Inf/zero norm."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        if len(b) % 4:
            raise ValueError(f"{what}: {len(b)} bytes is not a whole number of float32s")
        return b
    if _np is not None and isinstance(v, _np.ndarray):
        if v.ndim != 1:
            raise ValueError(f"{what}: expected a 1-dimensional array, got shape {v.shape}")
        return _np.ascontiguousarray(v, dtype="<f4").tobytes()
    if isinstance(v, (str,)):
        raise TypeError(f"{what}: expected numbers, bytes or a numpy array, got str")
    try:
        xs = [float(x) for x in v]
    except TypeError:
        raise TypeError(f"{what}: expected numbers, bytes or a numpy array, "
                        f"got {type(v).__name__}") from None
    return struct.pack(f"<{len(xs)}f", *xs)


VECTOR_TYPES = ("numpy", "list", "bytes")


def default_vector_type() -> str:
    return "numpy" if _np is not None else "list"


def vector_out(b: Optional[bytes], kind: str) -> Any:
    """Bytes from the server as the caller's vector type (a writable numpy array, a list of
    floats or the bytes)."""
    if b is None:
        return None
    if isinstance(b, str):
        raise TypeError("vector replies need a client made with decode_responses=False")
    if kind == "bytes":
        return bytes(b)
    if kind == "numpy":
        return _np.frombuffer(b, dtype="<f4").astype(_np.float32)
    return list(struct.unpack(f"<{len(b) // 4}f", b))


def check_vector_type(kind: str) -> str:
    if kind not in VECTOR_TYPES:
        raise ValueError(f"vector_type must be one of {VECTOR_TYPES}, not {kind!r}")
    if kind == "numpy" and _np is None:
        raise ValueError("vector_type='numpy' needs numpy (pip install 'convcache[numpy]')")
    return kind


# ------------------------------------------------------------------------------------------
# Arguments and replies

def meta_arg(meta: Union[None, str, bytes, Mapping[str, Any]], what: str = "meta"):
    """META accepts a dict (JSON-encoded here) or an already encoded JSON object."""
    if meta is None:
        return None
    if isinstance(meta, (str, bytes)):
        return meta
    if isinstance(meta, Mapping):
        return json.dumps(meta, separators=(",", ":"), ensure_ascii=False)
    raise TypeError(f"{what} must be a dict or a JSON string, not {type(meta).__name__}")


def to_str(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else str(x)


def text(x: Any, decode: bool) -> Any:
    """A bulk string reply as str (decode=True: UTF-8, invalid bytes become U+FFFD as in the
    module's JSON formats) or as the exact bytes (decode=False)."""
    if x is None:
        return None
    if decode:
        return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else x
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def json_reply(x: Any) -> Any:
    return json.loads(x)


def pairs(reply: Any) -> dict:
    """CONV.INFO/SEMCACHE.INFO: RESP3 map or RESP2 flat array -> {str: value}."""
    if reply is None:
        return None
    items = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
    return {to_str(k): v for k, v in items}


def chunks(flat: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    return (flat[i:i + n] for i in range(0, len(flat), n))


def seconds_arg(x: Any, what: str) -> int:
    """Relative time in seconds: an int or a timedelta (as redis-py's SET ex= accepts)."""
    import datetime as _dt
    if isinstance(x, _dt.timedelta):
        return int(x.total_seconds())
    return int_arg(x, what)


def millis_arg(x: Any, what: str) -> int:
    """Milliseconds: an int, a timedelta (relative) or a datetime (absolute, for PXAT)."""
    import datetime as _dt
    if isinstance(x, _dt.timedelta):
        return int(x.total_seconds() * 1000)
    if isinstance(x, _dt.datetime):
        return int(x.timestamp() * 1000)
    return int_arg(x, what)


def int_arg(x: Any, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{what} must be an int, not {type(x).__name__}")
    return x

"""create_redis_client: one connection pool per (host, port, db), as lix-open-cache's."""
import threading
from typing import Optional

import redis as _redis

from .config import CacheConfig

_pools = {}
_pools_lock = threading.Lock()


def create_redis_client(host: Optional[str] = None, port: Optional[int] = None, db: int = 0,
                        config: Optional[CacheConfig] = None, **kwargs):
    """A ``redis.Redis`` on a shared pool for (host, port, db). The first call pings the
    server; a password that the server refuses is dropped (lix's behaviour)."""
    cfg = config or CacheConfig()
    host = host or cfg.redis_host
    port = int(port or cfg.redis_port)
    pool_key = (host, port, db)
    with _pools_lock:
        if pool_key not in _pools:
            pool_kwargs = dict(
                host=host, port=port, db=db,
                decode_responses=kwargs.pop("decode_responses", False),
                socket_connect_timeout=kwargs.pop("socket_connect_timeout",
                                                  cfg.redis_socket_connect_timeout),
                socket_keepalive=kwargs.pop("socket_keepalive", cfg.redis_socket_keepalive),
                max_connections=cfg.redis_pool_size,
            )
            if cfg.redis_password:
                pool = _redis.ConnectionPool(password=cfg.redis_password, **pool_kwargs)
                try:
                    _redis.Redis(connection_pool=pool).ping()
                    _pools[pool_key] = pool
                except _redis.exceptions.AuthenticationError:
                    pool.disconnect()
            if pool_key not in _pools:
                pool = _redis.ConnectionPool(**pool_kwargs)
                _redis.Redis(connection_pool=pool).ping()
                _pools[pool_key] = pool
    return _redis.Redis(connection_pool=_pools[pool_key])

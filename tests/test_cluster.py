"""Valkey Cluster: commands route by their declared keys (a one-node cluster owning every slot,
and a two-node cluster where the wrong node answers MOVED)."""
import json

import pytest
import redis

from harness import free_port, wait_for


def cluster_node(servers, kind):
    # The bus port is given explicitly: port + 10000 may not exist for a high test port.
    bus = free_port()
    s = servers(kind, module_args=["window", "5"],
                extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                       "--cluster-port", str(bus)])
    s.bus_port = bus
    return s


def test_conv_commands_route_in_a_cluster(servers, kind):
    a = cluster_node(servers, kind)
    b = cluster_node(servers, kind)
    ra, rb = a.client(), b.client()
    ra.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
    rb.execute_command("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
    ra.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port, b.bus_port)
    for r in (ra, rb):
        wait_for(lambda r=r: r.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0,
                 timeout=30, what="cluster ok")
    # Keys on both nodes: each node serves its own slots and redirects the others.
    for key in ("chat:{user-1}", "chat:{user-2}", "chat:{user-3}", "chat:{user-4}"):
        slot = ra.execute_command("CLUSTER", "KEYSLOT", key)
        owner, other = (ra, rb) if slot <= 8191 else (rb, ra)
        assert owner.execute_command("CONV.ADD", key, "user", "hi") == 1
        assert json.loads(owner.execute_command("CONV.CTX", key)) == [{"role": "user", "content": "hi"}]
        for cmd in (["CONV.ADD", key, "user", "x"], ["CONV.CTX", key], ["CONV.LEN", key],
                    ["CONV.SEARCH", key, "TEXT", "hi"], ["CONV.HISTORY", key]):
            with pytest.raises(redis.exceptions.MovedError):
                other.execute_command(*cmd)
    # A cluster-aware client finds every session whatever node it asks first.
    rc = redis.RedisCluster(host="127.0.0.1", port=a.port)
    for i in range(20):
        rc.execute_command("CONV.ADD", f"s{i}", "user", f"m{i}")
    assert all(rc.execute_command("CONV.LEN", f"s{i}") == 1 for i in range(20))
    rc.close()

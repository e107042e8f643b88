"""A whole cluster on loopback, for developers, the multi-node test and bench/cluster.py
(issue 13): HAProxy in front of N app nodes, a separate worker, one Redis (AOF), one
PostgreSQL database, and the evidence storage every process shares: an S3 endpoint on
loopback (moto's standalone server, `moto[server]`, in memory: the evidence lives as long as
the cluster) that every process is configured with (SHUANGLU_STORAGE_URL), so no evidence is
kept on a node's disk; each node records into its own spool under the shared data folder.

    bin/cluster                      # 2 nodes + worker behind http://127.0.0.1:8180
    bin/cluster --nodes 3 --port 8280

HAProxy sends every call request (`/api/v1/calls/<session>/…`) to one node by hashing the
session in the path (consistent hashing: when a node goes down only its sessions move), the
rest round-robin; it checks each node's /api/v1/health every second. Nodes forward a call
request that still reaches the wrong node to the room's owner (infra/cluster.py).

PostgreSQL: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres) names the
server; the cluster uses its own database `shuanglu_cluster` (created, migrated and seeded
with the demo data on first start).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

HAPROXY_CONFIG = """\
global
  maxconn 4096
defaults
  mode http
  option forwardfor
  # A node that dies: the request goes to another (a connection refused or an empty answer;
  # the app's writes are safe to repeat: answers carry their client event id).
  retries 3
  option redispatch
  retry-on conn-failure empty-response
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
  # A health check answered late is a busy node, not a dead one (a dead node refuses the
  # connection at once): without this the check times out after `inter` (1 s) and a node
  # lagging twice in a row is taken out, so with one node every request gets 503.
  timeout check 5s
frontend api
  bind {host}:{port}
  acl call path_beg /api/v1/calls/
  use_backend calls if call
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /api/v1/health
{nodes}
backend calls
  # /api/v1/calls/<session>/...: field 5 of the path is the session id
  balance hash path,field(5,/)
  hash-type consistent
  # A node without headroom for another call refuses a new call's offer with 503 (and gives
  # up the session: media/call/admission.py): the offer is tried on another node, each retry
  # on a different one; when every node refuses, the last 503 (with Retry-After) goes back.
  retry-on conn-failure empty-response 503
  option redispatch 1
  option httpchk GET /api/v1/health
{nodes}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, seconds: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


def database_for(server_url: str, name: str = "shuanglu_cluster") -> str:
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


def ensure_database(url: str) -> None:
    """Creates the cluster's database on the server if it does not exist."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    code = (
        "import asyncio, asyncpg, sys\n"
        "async def main(url, name):\n"
        "    c = await asyncpg.connect(url)\n"
        "    try:\n"
        "        if not await c.fetchval('SELECT 1 FROM pg_database WHERE datname=$1', name):\n"
        "            await c.execute(f'CREATE DATABASE \"{name}\"')\n"
        "    finally:\n"
        "        await c.close()\n"
        "asyncio.run(main(sys.argv[1], sys.argv[2]))\n"
    )
    subprocess.run([sys.executable, "-c", code,
                    admin.replace("postgres://", "postgresql://", 1), name], check=True)


@dataclass
class LocalCluster:
    """The processes of a cluster; `start()` brings them up, `stop()` takes them down."""

    folder: Path
    database_url: str
    nodes: int = 2
    host: str = "127.0.0.1"
    port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    node_ports: list[int] = field(default_factory=list)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis_port: int = 0
    s3_port: int = 0
    # The evidence on S3 (moto on loopback); False keeps it in the shared data folder.
    s3: bool = True

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def node_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.node_ports[index]}"

    def env(self, **more: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SHUANGLU_PROFILE": "dev", "SHUANGLU_DATA_DIR": str(self.folder / "data"),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SHUANGLU_RUN_WORKER_IN_PROCESS": "false", "SHUANGLU_RUN_JOBS_IN_PROCESS": "false",
            "SHUANGLU_PUBLIC_URL": self.url, "SHUANGLU_TRUST_FORWARDED_FOR": "true",
            "PYTHONUNBUFFERED": "1",
        })
        if self.s3:
            env.update({
                "SHUANGLU_STORAGE_URL": f"s3://shuanglu-cluster/evidence?endpoint={self.s3_url}"
                                        "&create_bucket=true",
                "AWS_ACCESS_KEY_ID": "local-cluster", "AWS_SECRET_ACCESS_KEY": "local-cluster",
            })
        env.update(self.extra_env)
        env.update(more)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                args, cwd=ROOT, env=env or self.env(), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def start(self) -> LocalCluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        self.redis_port = free_port()
        self.node_ports = [free_port() for _ in range(self.nodes)]
        redis_dir = self.folder / "redis"
        redis_dir.mkdir(exist_ok=True)
        self._spawn("redis", [shutil.which("redis-server") or "redis-server",
                              "--port", str(self.redis_port), "--bind", "127.0.0.1",
                              "--appendonly", "yes", "--dir", str(redis_dir), "--save", ""])
        if self.s3:
            self.s3_port = free_port()
            moto = shutil.which("moto_server", path=os.path.dirname(sys.executable))
            self._spawn("s3", [moto or "moto_server", "-H", "127.0.0.1", "-p", str(self.s3_port)])
            _wait_http(self.s3_url + "/moto-api/", 30, self.processes["s3"])
        ensure_database(self.database_url)
        python = sys.executable
        for step in (["migrate"], ["seed-demo"]):
            subprocess.run([python, "-m", "app", *step], cwd=ROOT, env=self.env(), check=True,
                           stdout=subprocess.DEVNULL)
        for index in range(self.nodes):
            self.start_node(index, wait=False)
        self._spawn("worker", [python, "-m", "app", "worker"])
        for index in range(self.nodes):
            _wait_http(self.node_url(index) + "/api/v1/health", 120,
                       self.processes[f"node-{index + 1}"])
        config = self.folder / "haproxy.cfg"
        servers = "\n".join(
            f"  server node-{i + 1} 127.0.0.1:{p} check inter 1s fall 2 rise 2"
            for i, p in enumerate(self.node_ports))
        config.write_text(HAPROXY_CONFIG.format(host=self.host, port=self.port, nodes=servers))
        self._spawn("haproxy", [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f",
                                str(config)])
        _wait_http(self.url + "/api/v1/health", 30, self.processes["haproxy"])
        return self

    def start_node(self, index: int, wait: bool = True) -> None:
        name = f"node-{index + 1}"
        port = self.node_ports[index]
        self._spawn(name, [sys.executable, "-m", "app", "serve", "--port", str(port)],
                    self.env(SHUANGLU_NODE_ID=name, SHUANGLU_NODE_URL=self.node_url(index)))
        if wait:
            _wait_http(self.node_url(index) + "/api/v1/health", 120, self.processes[name])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kills one process (e.g. "node-1") the way a crash would."""
        process = self.processes.pop(name)
        os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop(self) -> None:
        order = ["haproxy", *[f"node-{i + 1}" for i in range(self.nodes)], "worker", "redis",
                 "s3"]
        for name in order:
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--port", type=int, default=8180)
    parser.add_argument("--folder", type=Path, default=ROOT / "data" / "cluster")
    args = parser.parse_args(argv)
    server = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    cluster = LocalCluster(args.folder, database_for(server), nodes=args.nodes, port=args.port)
    try:
        cluster.start()
        print(f"cluster up: {cluster.url}  (nodes "
              + ", ".join(cluster.node_url(i) for i in range(args.nodes))
              + f"; logs in {args.folder / 'logs'}; Ctrl-C stops it)", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Keep-alive HTTP connections each known to be served by a given granian worker.

Shared state (lockout counters, rate limits, revoked keys) is only proven
shared when consecutive requests reach different worker processes. Granian's
workers accept from one listening socket, so which one serves a connection
is chance; this finds out from ``/proc`` (the server side of the TCP
connection is a socket inode, open in exactly one worker) and keeps one
connection per worker.
"""

from __future__ import annotations

import http.client
import os
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit


def worker_pids(main_pid: int) -> set[int]:
    """The live children of granian's main process."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(ppid) == main_pid and state != "Z":
            pids.add(int(entry.name))
    return pids


def _server_socket_inode(server_port: int, client_port: int) -> str | None:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return inode
    return None


def _owner(pids: set[int], inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class WorkerConnection:
    """One keep-alive connection (and its cookies), served by worker ``pid``."""

    conn: http.client.HTTPConnection
    pid: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Response:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request(method, path, body=body or None, headers=sent)
        answer = self.conn.getresponse()
        data = answer.read()
        for value in answer.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, data)

    def post_form(self, path: str, form: dict[str, str]) -> Response:
        return self.request(
            "POST", path, urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
        )

    def close(self) -> None:
        self.conn.close()


def one_connection_per_worker(url: str, main_pid: int, workers: int = 2, attempts: int = 200) -> list[WorkerConnection]:
    """A connection to each of the server's ``workers`` workers (opens until every worker has one)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    pids = worker_pids(main_pid)
    assert len(pids) == workers, f"expected {workers} workers, found {sorted(pids)}"
    found: dict[int, WorkerConnection] = {}
    for _ in range(attempts):
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.connect()
        conn.request("GET", "/healthz")  # answered, so a worker has accepted the connection
        conn.getresponse().read()
        inode = _server_socket_inode(port, conn.sock.getsockname()[1])
        pid = _owner(pids, inode) if inode else None
        if pid is None or pid in found:
            conn.close()
            continue
        found[pid] = WorkerConnection(conn, pid)
        if len(found) == workers:
            return list(found.values())
    for c in found.values():
        c.close()
    raise AssertionError(f"could not reach every worker in {attempts} connections")

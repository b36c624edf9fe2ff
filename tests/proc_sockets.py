"""What a process session listens on and what is left of it, read from /proc (Linux)."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

AVAILABLE = Path("/proc/net/tcp").exists()


def _addr(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))), int(port, 16)


def listening() -> dict[int, tuple[str, str, int]]:
    """socket inode -> (proto, ip, port) for every listening TCP socket and bound UDP socket."""
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if proto.startswith("tcp") and f[3] != "0A":  # 0A = LISTEN
                continue
            out[int(f[9])] = (proto, *_addr(f[1]))
    return out


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def session_sockets(sid: int) -> set[tuple[str, str, str, int]]:
    """(process name, proto, ip, port) of the listening sockets of every process in session ``sid``."""
    socks, found = listening(), set()
    for pid in _session_pids(sid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in socks:
                found.add((name, *socks[int(link[8:-1])]))
    return found


def session_processes(sid: int) -> list[str]:
    names = []
    for pid in _session_pids(sid):
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            pass
    return names


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback

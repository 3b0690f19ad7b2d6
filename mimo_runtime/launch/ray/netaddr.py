"""Which addresses are loopback, and which interface gloo should use (no `ray` import here)."""

import ipaddress
import socket
from typing import Optional


def is_loopback(address: str) -> bool:
    """`127.0.0.1`, `localhost`, `127.0.0.1:6379`, `http://127.0.0.1:8265`, `[::1]:1` -> True."""
    host = address.split("://")[-1]
    host = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def interface_for(ip: str) -> Optional[str]:
    """The network interface that owns `ip`."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
            return name
    return None


def gloo_interface(local_ip: str) -> Optional[str]:
    """GLOO_SOCKET_IFNAME for a rank whose peers reach it at `local_ip`: loopback only when the job is local."""
    return "lo" if is_loopback(local_ip) else interface_for(local_ip)


def local_ip_towards(host: str) -> str:
    """The local address this machine uses to reach `host` (a UDP connect sends nothing)."""
    if is_loopback(host):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(host), 9))
        return s.getsockname()[0]

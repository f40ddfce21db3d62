"""Which Host headers `mwa serve` answers, and what it says when it listens beyond this PC.

The Host allow-list is on for every bind (the DNS-rebinding guard: a web page on another site that makes the
browser resolve its own name to this PC sends that name as Host, and gets 400). On 127.0.0.1 it holds the
loopback names. On another address it also holds that address, this machine's own names and addresses (what a
colleague types to reach it) and every `--allow-host NAME`; a wildcard bind (0.0.0.0, ::) never means "any Host".
"""

from __future__ import annotations

import ipaddress
import socket

LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
WILDCARDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _machine_names() -> list[str]:
    """This machine's host name, its fully qualified name and the addresses they resolve to."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            continue
    return sorted(n for n in names if n)


def allowed_hosts(bind: str, extra: list[str] | None = None) -> list[str]:
    """The Host header values answered for a server bound to `bind` (module docstring)."""
    allowed = list(LOOPBACK_NAMES)
    if not is_loopback(bind):
        if bind not in WILDCARDS:
            allowed.append(bind)
        allowed += _machine_names()
    allowed += [h.strip().lower() for h in extra or [] if h.strip()]
    out = []
    for name in allowed:
        for form in (name, f"[{name}]") if ":" in name and not name.startswith("[") else (name,):
            if form not in out:
                out.append(form)
    return out


def bind_warning(bind: str, port: int, allowed: list[str]) -> str | None:
    """The warning printed before listening on an address other PCs can reach, or None on loopback."""
    if is_loopback(bind):
        return None
    where = "every network interface" if bind in WILDCARDS else bind
    names = ", ".join(n for n in allowed if n not in LOOPBACK_NAMES)
    return (f"listening on {where}, port {port}: any computer that can reach this PC can search the index and see "
            f"its photos (there is no login). Only requests addressed to these names are answered: {names}; add "
            "others with --allow-host NAME. Use --host 127.0.0.1 to keep it on this PC.")

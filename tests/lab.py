"""A network-namespace lab for icmpx tests: a chain of kernel routers between two hosts.

    client C ── R1 ── R2 ── … ── Rn ── target T

Link k (k = 1 … n+1) joins node k-1 and node k (node 0 = C, node n+1 = T) with a veth pair, on
198.18.k.0/24 and 2001:db8:k::/64 (k written with its decimal digits, so link 10 is
2001:db8:10::/64); node k-1 holds .1 / ::1, node k holds .2 / ::2.  Router k therefore answers TTL
k from ``198.18.k.2`` / ``2001:db8:k::2`` and the target is ``198.18.{n+1}.2``.  In each namespace
the veth towards the client is called ``prev`` and the one towards the target ``next``.

Routing is explicit in both directions: the client's default route goes to R1, the target's to Rn,
and every router has a route for every lab subnet (and every ``target_local`` prefix), so an
address outside the lab gets "network unreachable" from R1 instead of looping.

Only loopback and these namespaces ever see a packet: nothing is attached to the root namespace,
and each namespace resolves names from its own /etc/netns/<name>/hosts with a resolv.conf
pointing at 127.0.0.1 (where nothing listens), so no lookup leaves the machine.

Needs root, iproute2 (``ip``), nftables (``nft``) and util-linux (``setpriv``).
``lab_available()`` says why the lab cannot run here, or returns None.

Running as uid 65534 (``user="nobody"``): the process holds no capability and cannot gain one
(no_new_privs), so it may only use ping sockets, and only when the namespace's
``ping_group_range`` admits gid 65534.  It must be able to execute the test interpreter: every
directory above it needs the search (x) bit for others.  ``nobody_blockers()`` lists the
directories that lack it; ``.ci/run`` fixes them with ``chmod o+x`` (a pyenv or uv interpreter
under a 0700 /root is the usual case).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "DOMAIN",
    "NOBODY",
    "Lab",
    "LabCommandError",
    "LabError",
    "User",
    "lab_available",
    "lab_chain",
    "nobody_blockers",
]

LAB_NET4 = ipaddress.IPv4Network("198.18.0.0/15")
LAB_NET6 = ipaddress.IPv6Network("2001:db8::/32")
DOMAIN = "lab.test"
NOBODY = 65534
NETNS_ETC = Path("/etc/netns")
OPEN_PING_GROUP_RANGE = (0, 2147483647)
SETUP_TIMEOUT = 30.0  # seconds allowed for one setup command
SETTLE_TIMEOUT = 15.0  # seconds allowed for links to come up and DAD to finish

User = Literal["root", "nobody"]

# Writes "key=value" pairs into /proc/sys of the namespace it runs in; a key starting with "?"
# is optional (skipped when the kernel does not have it).  No dependency on procps' sysctl.
_SYSCTL_SH = r"""
for kv do
    k=${kv%%=*}; v=${kv#*=}
    case $k in
        \?*) k=${k#\?}; [ -e "/proc/sys/$k" ] || continue ;;
    esac
    printf '%s\n' "$v" > "/proc/sys/$k" || { echo "cannot set $k=$v" >&2; exit 1; }
done
"""

# Turns root into uid/gid 65534 holding no capability, with no way to gain one (no_new_privs
# neutralises setuid binaries and file capabilities such as Debian's `ping cap_net_raw=ep`: ping
# still runs, but only with what nobody has, i.e. a ping socket when ping_group_range allows).
#
# setpriv keeps its own capabilities until its execve (it needs them to drop the bounding and
# inheritable sets after the uid change), so whatever it executes directly is looked up with
# root's permissions, and NNP clips new capabilities against root's.  Hence the /bin/sh hop: the
# shell starts with nothing, and the real command is found and executed by a true nobody.
# The bounding set is left alone on purpose: clearing it makes the execve of any binary with
# file capabilities fail with EPERM (ping could not even start).
_NOBODY_SETPRIV = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--no-new-privs",
    "--",
    "/bin/sh",
    "-c",
    'exec "$@"',
    "nobody",
]


class LabError(RuntimeError):
    """The lab could not be built, used or torn down."""


class LabCommandError(subprocess.CalledProcessError):
    """A command run in the lab failed; the message carries its output."""

    def __str__(self) -> str:
        text = super().__str__()
        for label, data in (("stdout", self.stdout), ("stderr", self.stderr)):
            if data:
                text += f"\n--- {label} ---\n{str(data).rstrip()}"
        return text


def _run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = SETUP_TIMEOUT,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
        cwd=cwd,
        check=False,
    )
    if check and proc.returncode != 0:
        raise LabCommandError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc


@functools.cache
def lab_available() -> str | None:
    """Why a namespace lab cannot run on this machine, or None when it can.

    Probes for real: creates a throw-away namespace and loads an nftables table in it.
    """
    if not sys.platform.startswith("linux"):
        return f"network namespaces need Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the namespace lab needs root (run the tests as root, as CI does)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (install the {package} package)"
    probe = f"icmpx-{secrets.token_hex(4)}-probe"
    try:
        added = _run(["ip", "netns", "add", probe], check=False)
        if added.returncode != 0:
            return f"cannot create a network namespace: {added.stderr.strip()}"
        try:
            nft = _run(
                ["ip", "netns", "exec", probe, "nft", "-f", "-"],
                input="table inet icmpx_probe {\n chain c { type filter hook output priority 0; }\n}\n",
                check=False,
            )
            if nft.returncode != 0:
                return f"nftables does not work in a namespace: {nft.stderr.strip()}"
        finally:
            _run(["ip", "netns", "del", probe], check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot probe network namespaces: {exc}"
    return None


def _nobody_can_search(path: Path) -> bool:
    st = path.stat()
    if st.st_uid == NOBODY:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == NOBODY:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def nobody_blockers(paths: Iterable[str | os.PathLike[str]] | None = None) -> list[str]:
    """Directories that keep uid 65534 from reaching the test interpreter (or the given paths).

    By default checks the interpreter (symlinks resolved), the virtualenv, the base Python and the
    source tree.  An empty list means ``Lab.python(..., user="nobody")`` can start.
    """
    if paths is None:
        paths = [
            os.path.realpath(sys.executable),
            sys.prefix,
            sys.base_prefix,
            Path(__file__).resolve().parent.parent / "src",
        ]
    blockers: list[str] = []
    for p in paths:
        target = Path(os.path.realpath(p))
        chain = [*reversed(target.parents)]
        if target.is_dir():
            chain.append(target)
        for d in chain:
            if str(d) not in blockers and not _nobody_can_search(d):
                blockers.append(str(d))
    return blockers


def _check_lab_address(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    space = LAB_NET4 if net.version == 4 else LAB_NET6
    if not net.subnet_of(space):  # type: ignore[arg-type]
        raise ValueError(f"{net} is outside the lab address space {space}")


class Lab:
    """A built chain of namespaces (see the module docstring).  Create it with ``lab_chain()``."""

    client: str
    routers: list[str]
    target: str
    n_routers: int

    def __init__(
        self,
        n_routers: int,
        *,
        silent: Iterable[int] = (),
        loss: Mapping[int, float] | None = None,
        ping_group_range: tuple[int, int] = OPEN_PING_GROUP_RANGE,
        target_local4: Iterable[str] = (),
        target_local6: Iterable[str] = (),
        prefix: str | None = None,
    ) -> None:
        if not 0 <= n_routers <= 250:
            raise ValueError(f"n_routers must be in 0..250, not {n_routers}")
        self.n_routers = n_routers
        self.silent = frozenset(silent)
        self.loss = dict(loss or {})
        for k in self.silent | set(self.loss):
            if not 1 <= k <= n_routers:
                raise ValueError(f"router {k} does not exist (routers are 1..{n_routers})")
        for k, pct in self.loss.items():
            if not 0 <= pct <= 100:
                raise ValueError(f"loss at router {k} must be a percentage, not {pct}")
        self.initial_ping_group_range = ping_group_range
        links4 = [ipaddress.IPv4Network(f"198.18.{k}.0/24") for k in self._links()]
        links6 = [ipaddress.IPv6Network(f"2001:db8:{k}::/64") for k in self._links()]
        self.target_local4 = [ipaddress.IPv4Network(c) for c in target_local4]
        self.target_local6 = [ipaddress.IPv6Network(c) for c in target_local6]
        for nets, links in ((self.target_local4, links4), (self.target_local6, links6)):
            for net in nets:
                _check_lab_address(net)
                for link in links:
                    if net.overlaps(link):
                        raise ValueError(f"target-local prefix {net} overlaps lab link {link}")

        self.prefix = prefix or f"icmpx-{secrets.token_hex(4)}"
        self.client = f"{self.prefix}-c"
        self.routers = [f"{self.prefix}-r{k}" for k in range(1, n_routers + 1)]
        self.target = f"{self.prefix}-t"
        self._created_ns: list[str] = []
        self._created_etc: list[Path] = []
        self._procs: list[subprocess.Popen[str]] = []
        self._closed = False

    # ------------------------------------------------------------------ addressing

    def _links(self) -> range:
        return range(1, self.n_routers + 2)

    @property
    def nodes(self) -> list[str]:
        """Namespace names in chain order: client, routers 1..n, target (node k is hop k)."""
        return [self.client, *self.routers, self.target]

    def _check_hop(self, k: int, *, allow_client: bool = False) -> None:
        lo = 0 if allow_client else 1
        if not lo <= k <= self.n_routers + 1:
            raise ValueError(f"hop {k} does not exist (hops are {lo}..{self.n_routers + 1})")

    def hop4(self, k: int) -> str:
        """IPv4 address that answers TTL k: router k for k <= n, the target for k = n+1."""
        self._check_hop(k)
        return f"198.18.{k}.2"

    def hop6(self, k: int) -> str:
        """IPv6 address that answers hop limit k (router k, or the target for k = n+1)."""
        self._check_hop(k)
        return f"2001:db8:{k}::2"

    def hops4(self) -> list[str]:
        """What a complete IPv4 traceroute to the target shows, hop 1 first."""
        return [self.hop4(k) for k in range(1, self.n_routers + 2)]

    def hops6(self) -> list[str]:
        return [self.hop6(k) for k in range(1, self.n_routers + 2)]

    @property
    def target4(self) -> str:
        return self.hop4(self.n_routers + 1)

    @property
    def target6(self) -> str:
        return self.hop6(self.n_routers + 1)

    @property
    def client4(self) -> str:
        return "198.18.1.1"

    @property
    def client6(self) -> str:
        return "2001:db8:1::1"

    def hostname(self, k: int) -> str:
        """Name of hop k in the hosts files: ``r{k}.lab.test``, ``target.lab.test`` for n+1,
        ``client.lab.test`` for 0."""
        self._check_hop(k, allow_client=True)
        if k == 0:
            return f"client.{DOMAIN}"
        if k == self.n_routers + 1:
            return f"target.{DOMAIN}"
        return f"r{k}.{DOMAIN}"

    def hosts_file(self) -> str:
        """Contents of every lab namespace's /etc/hosts (every interface address is named)."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        for k in self._links():
            # Link k: node k-1 holds .1 / ::1, node k holds .2 / ::2.  The answering address of
            # hop k (.2) comes first so forward lookups of the name list it first.
            lines.append(f"198.18.{k}.2\t{self.hostname(k)}")
            lines.append(f"2001:db8:{k}::2\t{self.hostname(k)}")
            lines.append(f"198.18.{k}.1\t{self.hostname(k - 1)}")
            lines.append(f"2001:db8:{k}::1\t{self.hostname(k - 1)}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ running things

    def _argv(self, argv: Sequence[str], ns: str | None, user: User) -> list[str]:
        ns = self.client if ns is None else ns
        if ns not in self.nodes:
            raise ValueError(f"{ns!r} is not a namespace of this lab")
        if user == "root":
            wrap: list[str] = []
        elif user == "nobody":
            wrap = list(_NOBODY_SETPRIV)
        else:
            raise ValueError(f"user must be 'root' or 'nobody', not {user!r}")
        return ["ip", "netns", "exec", ns, *wrap, *argv]

    @staticmethod
    def _env(user: User, env: Mapping[str, str] | None) -> dict[str, str]:
        full = dict(os.environ)
        if user == "nobody":
            full.update(HOME="/nonexistent", USER="nobody", LOGNAME="nobody")
        full.update(env or {})
        return full

    def exec(
        self,
        argv: list[str],
        *,
        ns: str | None = None,
        user: User = "root",
        timeout: float = 60,
        check: bool = True,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in namespace ``ns`` (default: the client) and wait for it.

        ``user="nobody"`` runs it as uid/gid 65534 with no capabilities.  ``env`` is added to
        the current environment.  Output is captured as text; with ``check`` a non-zero exit
        raises ``LabCommandError`` (whose message includes stdout and stderr).
        """
        return _run(
            self._argv(argv, ns, user),
            input=input,
            timeout=timeout,
            check=check,
            env=self._env(user, env),
            cwd="/" if user == "nobody" else None,
        )

    def popen(
        self,
        argv: list[str],
        *,
        ns: str | None = None,
        user: User = "root",
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in the background in namespace ``ns``; killed at teardown if still
        running.  ``kwargs`` go to ``subprocess.Popen`` (text mode is always on)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        if user == "nobody":
            kwargs.setdefault("cwd", "/")
        proc: subprocess.Popen[str] = subprocess.Popen(
            self._argv(argv, ns, user), env=self._env(user, env), text=True, **kwargs
        )
        self._procs.append(proc)
        return proc

    def python(
        self,
        code: str,
        *,
        user: User = "root",
        timeout: float = 60,
        check: bool = True,
        args: Sequence[str] = (),
        ns: str | None = None,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``code`` with this interpreter (``sys.executable``, i.e. the venv where icmpx is
        installed) inside namespace ``ns`` (default: the client); ``args`` become sys.argv[1:]."""
        if user == "nobody" and (blockers := nobody_blockers()):
            raise LabError(
                f"uid {NOBODY} cannot reach the interpreter {sys.executable}: "
                f"{', '.join(blockers)} lack the search bit for others; run .ci/run "
                f"(or `chmod o+x {' '.join(blockers)}`)"
            )
        return self.exec(
            [sys.executable, "-c", code, *args],
            ns=ns,
            user=user,
            timeout=timeout,
            check=check,
            input=input,
            env=env,
        )

    def sysctl(self, key: str, value: str, *, ns: str | None = None) -> None:
        """Set a sysctl (``net.ipv4.ping_group_range`` or ``net/ipv4/ping_group_range``) in a
        lab namespace (default: the client)."""
        self._sysctls(self.client if ns is None else ns, {key.replace(".", "/"): value})

    def read_sysctl(self, key: str, *, ns: str | None = None) -> str:
        path = "/proc/sys/" + key.replace(".", "/")
        return self.exec(["cat", path], ns=ns).stdout.strip()

    def set_ping_group_range(self, lo: int, hi: int) -> None:
        """Which gids may open ping sockets in the client namespace; (1, 0) allows nobody."""
        self.sysctl("net.ipv4.ping_group_range", f"{lo} {hi}")

    # ------------------------------------------------------------------ building

    def _ip(self, ns: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "-n", ns, *args], input=input)

    def _sysctls(self, ns: str, values: Mapping[str, str]) -> None:
        pairs = [f"{k}={v}" for k, v in values.items()]
        _run(["ip", "netns", "exec", ns, "sh", "-c", _SYSCTL_SH, "sh", *pairs])

    def _build(self) -> None:
        hosts = self.hosts_file()
        if not NETNS_ETC.is_dir():
            NETNS_ETC.mkdir(parents=True, exist_ok=True)
            NETNS_ETC.chmod(0o755)
        for ns in self.nodes:
            _run(["ip", "netns", "add", ns])
            self._created_ns.append(ns)
            # `ip netns exec` bind-mounts these over /etc/hosts and /etc/resolv.conf.  Modes are
            # explicit (not left to the umask): uid 65534 must read them too.
            etc = NETNS_ETC / ns
            etc.mkdir()
            self._created_etc.append(etc)
            etc.chmod(0o755)
            for name, text in (("hosts", hosts), ("resolv.conf", "nameserver 127.0.0.1\n")):
                (etc / name).write_text(text)
                (etc / name).chmod(0o644)

        last = self.n_routers + 1
        for k, ns in enumerate(self.nodes):
            values = {
                "net/ipv4/icmp_ratelimit": "0",
                "net/ipv4/icmp_ratemask": "0",
                "net/ipv6/icmp/ratelimit": "0",
                "?net/ipv6/icmp/ratemask": "",  # empty list: no ICMPv6 type is rate limited
                # Set before the veths exist so they inherit them: no DAD, no RA/autoconf.
                "net/ipv6/conf/all/accept_dad": "0",
                "net/ipv6/conf/default/accept_dad": "0",
                "net/ipv6/conf/default/accept_ra": "0",
                "net/ipv6/conf/default/autoconf": "0",
            }
            if k == 0:
                values["net/ipv4/ping_group_range"] = "{} {}".format(*self.initial_ping_group_range)
            if 0 < k < last:
                values |= {
                    "net/ipv4/ip_forward": "1",
                    "net/ipv6/conf/all/forwarding": "1",
                    "net/ipv6/conf/default/forwarding": "1",
                }
            self._sysctls(ns, values)

        # Veths are created inside the namespaces, the peer directly in the next one.
        for k in self._links():
            left, right = self.nodes[k - 1], self.nodes[k]
            self._ip(left, "link", "add", "next", "type", "veth", "peer", "name", "prev",
                     "netns", right)  # fmt: skip

        for k, ns in enumerate(self.nodes):
            cmds = ["link set lo up"]
            if k > 0:  # link k towards the client: we are .2
                cmds += [
                    f"addr add 198.18.{k}.2/24 dev prev",
                    f"addr add 2001:db8:{k}::2/64 dev prev nodad",
                    "link set prev up",
                ]
            if k < last:  # link k+1 towards the target: we are .1
                cmds += [
                    f"addr add 198.18.{k + 1}.1/24 dev next",
                    f"addr add 2001:db8:{k + 1}::1/64 dev next nodad",
                    "link set next up",
                ]
            if k == last:
                cmds += [f"route add local {net} dev lo" for net in self.target_local4]
                cmds += [f"route add local {net} dev lo" for net in self.target_local6]
            self._ip(ns, "-batch", "-", input="\n".join(cmds) + "\n")

        for k, ns in enumerate(self.nodes):
            if k == 0:
                cmds = [
                    "route add 0.0.0.0/0 via 198.18.1.2 dev next",
                    "route add ::/0 via 2001:db8:1::2 dev next",
                ]
            elif k == last:
                cmds = [
                    f"route add 0.0.0.0/0 via 198.18.{k}.1 dev prev",
                    f"route add ::/0 via 2001:db8:{k}::1 dev prev",
                ]
            else:
                cmds = []
                for j in range(1, k):  # links behind us, towards the client
                    cmds.append(f"route add 198.18.{j}.0/24 via 198.18.{k}.1 dev prev")
                    cmds.append(f"route add 2001:db8:{j}::/64 via 2001:db8:{k}::1 dev prev")
                ahead = [f"198.18.{j}.0/24" for j in range(k + 2, last + 1)]
                ahead += [str(net) for net in self.target_local4]
                cmds += [f"route add {net} via 198.18.{k + 1}.2 dev next" for net in ahead]
                ahead6 = [f"2001:db8:{j}::/64" for j in range(k + 2, last + 1)]
                ahead6 += [str(net) for net in self.target_local6]
                cmds += [f"route add {net} via 2001:db8:{k + 1}::2 dev next" for net in ahead6]
            self._ip(ns, "-batch", "-", input="\n".join(cmds) + "\n")

        for k in sorted(self.silent | set(self.loss)):
            rules = ["table inet icmpx_lab {"]
            if k in self.silent:
                rules += [
                    "  chain output {",
                    "    type filter hook output priority filter; policy accept;",
                    "    icmp type time-exceeded drop",
                    "    icmpv6 type time-exceeded drop",
                    "  }",
                ]
            if k in self.loss:
                rules += [
                    "  chain forward {",
                    "    type filter hook forward priority filter; policy accept;",
                    f"    numgen random mod 10000 < {round(self.loss[k] * 100)} drop",
                    "  }",
                ]
            rules.append("}")
            _run(["ip", "netns", "exec", self.nodes[k], "nft", "-f", "-"],
                 input="\n".join(rules) + "\n")  # fmt: skip

        self._wait_settled()

    def _unsettled(self) -> list[str]:
        problems = []
        for ns in self.nodes:
            links = json.loads(self._ip(ns, "-j", "link", "show").stdout)
            for link in links:
                if link["ifname"] != "lo" and link.get("operstate") != "UP":
                    problems.append(f"{ns}: {link['ifname']} is {link.get('operstate')}")
            tentative = json.loads(self._ip(ns, "-j", "-6", "addr", "show", "tentative").stdout)
            for link in tentative:
                for addr in link.get("addr_info", []):
                    problems.append(f"{ns}: {addr.get('local')} is tentative")
        return problems

    def _wait_settled(self) -> None:
        """Wait (bounded) until every veth is up and no IPv6 address is tentative."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while problems := self._unsettled():
            if time.monotonic() > deadline:
                raise LabError("lab did not settle: " + "; ".join(problems))
            time.sleep(0.05)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Kill what runs in the lab, delete its namespaces and /etc/netns entries.  Idempotent;
        tries every step and raises LabError at the end if any failed."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                errors.append(f"{proc.args!r}: {exc}")
        for ns in reversed(self._created_ns):
            try:
                pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                deleted = _run(["ip", "netns", "del", ns], check=False)
                if deleted.returncode != 0:
                    errors.append(f"ip netns del {ns}: {deleted.stderr.strip()}")
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{ns}: {exc}")
        for etc in reversed(self._created_etc):
            try:
                shutil.rmtree(etc)
            except FileNotFoundError:
                pass
            except OSError as exc:
                errors.append(f"{etc}: {exc}")
        if errors:
            raise LabError("lab teardown failed: " + "; ".join(errors))

    def __repr__(self) -> str:
        return f"<Lab {self.prefix} routers={self.n_routers}>"


@contextlib.contextmanager
def lab_chain(
    n_routers: int = 8,
    *,
    silent: Iterable[int] = (),
    loss: Mapping[int, float] | None = None,
    ping_group_range: tuple[int, int] = OPEN_PING_GROUP_RANGE,
    target_local4: Iterable[str] = (),
    target_local6: Iterable[str] = (),
) -> Iterator[Lab]:
    """Build a chain client ── r1 ── … ── rn ── target; tear it down on exit, always.

    silent:           routers whose Time Exceeded messages (v4 and v6) are dropped.
    loss:             {router: percent} random drop of packets *forwarded* by that router, in both
                      directions (a round trip through it survives with probability (1-p)²).
    ping_group_range: net.ipv4.ping_group_range in the client namespace ((1, 0) = closed).
    target_local4/6:  prefixes (inside 198.18.0.0/15 / 2001:db8::/32) made entirely local in the
                      target, every address answering echoes, and routed along the chain.
    """
    lab = Lab(
        n_routers,
        silent=silent,
        loss=loss,
        ping_group_range=ping_group_range,
        target_local4=target_local4,
        target_local6=target_local6,
    )
    try:
        lab._build()
        yield lab
    finally:
        lab.close()


if __name__ == "__main__":
    # Manual use: `sudo .venv/bin/python tests/lab.py` builds a lab and waits for Enter.
    reason = lab_available()
    if reason:
        sys.exit(reason)
    with lab_chain() as demo:
        print("client:", demo.client, "routers:", *demo.routers, "target:", demo.target)
        print(f"try: ip netns exec {demo.client} traceroute -I -n {demo.target4}")
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input("press Enter to tear down ")

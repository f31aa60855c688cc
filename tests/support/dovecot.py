"""A real, throwaway Dovecot 2.3 IMAP server for tests (RELIABILITY.md §10).

`Dovecot(root)` writes a config, a passwd-file and Maildir homes under `root`, listens on free
ports on 127.0.0.1 only, and runs `dovecot -F` as a child process. As root (CI, this machine) every
Dovecot process runs as `nobody:nogroup`; as any other user it runs as that user.

With `tls=True` (the default) it also has an implicit-TLS listener (`imaps_port`) and offers
STARTTLS on the plain port, with a certificate for 127.0.0.1 signed by a throwaway CA generated
at start (`ca_path`, `client_ssl_context()`).

Helpers talk to the server the way a mail client would (stdlib `imaplib`) or through `doveadm`.
They are synchronous and bounded by timeouts; from async tests, call the slow ones through
`asyncio.to_thread` when the event loop must keep running meanwhile.
"""

from __future__ import annotations

import datetime as dt
import grp
import imaplib
import ipaddress
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"
TIMEOUT = 15.0

CONFIG = """\
# dovecot.conf -- throwaway IMAP test instance (Dovecot 2.3 syntax), see RELIABILITY.md §10
instance_name = imaptest-{port}
base_dir = {root}/run
state_dir = {root}/state
protocols = imap
listen = 127.0.0.1
disable_plaintext_auth = no
auth_mechanisms = plain login
# no 2 s penalty after a failed login: tests try wrong passwords on purpose
auth_failure_delay = 0
log_path = {root}/dovecot.log
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
passdb {{
  # one file per user: Dovecot re-reads a changed passwd-file at most once a second, but
  # reads a file it has not seen yet at once, so a user added mid-test can log in at once
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={user} gid={group} home={root}/home/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
protocol imap {{
  mail_max_userip_connections = 50
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
service anvil {{
  chroot =
  # no per-IP brute-force penalty (2 → 4 → 8 → 15 s): tests fail logins on purpose
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{ssl}
"""

SSL_ON = """\
ssl = yes
ssl_cert = <{root}/tls/cert.pem
ssl_key = <{root}/tls/key.pem
"""


def dovecot_available() -> bool:
    """Whether the Dovecot binaries are installed (CI installs `dovecot-imapd`)."""
    return os.access(DOVECOT, os.X_OK) and os.access(DOVEADM, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    """One Dovecot instance; `start()` once, `stop()` at the end (also a context manager)."""

    host = "127.0.0.1"

    def __init__(self, root: Path, *, tls: bool = True) -> None:
        self.root = root
        self.tls = tls
        self.port = free_port()
        self.imaps_port = free_port() if tls else 0
        self.config = root / "dovecot.conf"
        self.ca_path = root / "tls" / "ca.pem"
        self._process: subprocess.Popen[bytes] | None = None
        self._passwords: dict[str, str] = {}
        if os.geteuid() == 0:
            # §10: never run the test server as root; every Dovecot process, and doveadm,
            # runs as nobody, and the temp tree belongs to nobody
            self.user, self.group = "nobody", "nogroup"
        else:
            self.user = pwd.getpwuid(os.geteuid()).pw_name
            self.group = grp.getgrgid(os.getegid()).gr_name

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for sub in ("run", "state", "home", "users"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        ssl_block = "ssl = no"  # Dovecot's default is yes: it would offer STARTTLS, certless
        if self.tls:
            self._write_certificates()
            ssl_block = SSL_ON.format(root=self.root)
        self.config.write_text(
            CONFIG.format(
                root=self.root,
                port=self.port,
                imaps_port=self.imaps_port,
                user=self.user,
                group=self.group,
                ssl=ssl_block,
            )
        )
        self._hand_over(self.root)
        # stderr to a file, not a pipe: nobody reads a pipe, and a full one would block Dovecot
        with (self.root / "stderr.log").open("wb") as stderr:
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                user=self._run_as,
                group=self._run_as and self.group,
                extra_groups=[] if self._run_as else None,
            )
        self._wait_ready()

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(TIMEOUT)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self) -> str:
        """The server log (and anything Dovecot printed), to attach to a failing test."""
        paths = [self.root / "stderr.log", self.root / "dovecot.log"]
        return "".join(p.read_text(errors="replace") for p in paths if p.exists())

    # -- users and mail ----------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """A user that can log in at once (its own passwd-file, see the config)."""
        if not re.fullmatch(r"[A-Za-z0-9._@+-]+", name) or ":" in password or "\n" in password:
            raise ValueError(f"unsupported test user {name!r}")
        path = self.root / "users" / name
        path.write_text(f"{name}:{{PLAIN}}{password}::::\n", encoding="utf-8")
        self._hand_over(path)
        self._passwords[name] = password

    def append(self, user: str, folder: str, raw: bytes, flags: Sequence[str] = ()) -> int:
        """IMAP APPEND from a separate connection; returns the new UID (APPENDUID)."""
        with self.imap(user) as imap:
            flag_list = f"({' '.join(flags)})" if flags else None
            typ, data = imap.append(_quote(folder), flag_list, None, raw)
            _check(typ, data, "APPEND")
            match = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            if match is None:
                raise RuntimeError(f"no APPENDUID in {data!r}")
            return int(match.group(1))

    def create_folder(self, user: str, folder: str) -> None:
        with self.imap(user) as imap:
            _check(*imap.create(_quote(folder)), "CREATE")

    def delete_folder(self, user: str, folder: str) -> None:
        with self.imap(user) as imap:
            _check(*imap.delete(_quote(folder)), "DELETE")

    def imap(self, user: str) -> _Imap:
        """A logged-in stdlib client (a context manager that logs out)."""
        client = imaplib.IMAP4(self.host, self.port, timeout=TIMEOUT)
        try:
            client.login(user, self._passwords[user])
        except BaseException:
            client.shutdown()
            raise
        return _Imap(client)

    def doveadm(self, *args: str) -> str:
        """Run `doveadm -c <config> ARGS…` as the mail user; returns stdout."""
        result = subprocess.run(
            [DOVEADM, "-c", str(self.config), *args],
            capture_output=True,
            check=False,
            timeout=TIMEOUT,
            user=self._run_as,
            group=self._run_as and self.group,
            extra_groups=[] if self._run_as else None,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} exited {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        out: bytes = result.stdout
        return out.decode(errors="replace")

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, tuple[str, ...]]:
        """UID → stored flags, read with doveadm so nothing changes them.

        `\\Recent` is left out: it is per-session state, not a flag anyone set.
        """
        out = self.doveadm("-f", "tab", "fetch", "-u", user, "uid flags", "mailbox", folder, "all")
        rows = [line.split("\t") for line in out.splitlines()[1:] if line]
        return {
            int(row[0]): tuple(
                f for f in (row[1].split() if len(row) > 1 else []) if f != "\\Recent"
            )
            for row in rows
        }

    def status(self, user: str, folder: str = "INBOX") -> dict[str, int]:
        """messages, uidnext, uidvalidity and highestmodseq of one folder."""
        fields = "messages uidnext uidvalidity highestmodseq"
        out = self.doveadm("-f", "tab", "mailbox", "status", "-u", user, fields, folder)
        header, values = out.splitlines()[:2]
        row = dict(zip(header.split("\t"), values.split("\t"), strict=True))
        return {name: int(row[name]) for name in fields.split()}

    def set_uidvalidity(self, user: str, folder: str, value: int) -> None:
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    # -- TLS -----------------------------------------------------------------------------------

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts only this instance's throwaway CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def _write_certificates(self) -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inbox-service test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.host)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(self.host)), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        tls = self.root / "tls"
        tls.mkdir(exist_ok=True)
        self.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (tls / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tls / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (tls / "key.pem").chmod(0o600)

    # -- internals ----------------------------------------------------------------------------

    @property
    def _run_as(self) -> str | None:
        """The user to drop to when started as root (Popen's `user=`), else None."""
        return self.user if os.geteuid() == 0 else None

    def _hand_over(self, root: Path) -> None:
        """As root: give the tree to the mail user, and let it through the parent dirs."""
        if os.geteuid() != 0:
            return
        uid, gid = pwd.getpwnam(self.user).pw_uid, grp.getgrnam(self.group).gr_gid
        for path in [root, *root.rglob("*")]:
            os.chown(path, uid, gid)
        if not root.is_dir():
            return
        root.chmod(0o755)
        for parent in root.parents:
            if parent == Path(parent.anchor):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)  # traversable (x) only; nothing becomes readable

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            process = self._process
            if process is None or process.poll() is not None:
                self.stop()
                raise RuntimeError(f"dovecot exited at start:\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dovecot did not start in {TIMEOUT} s\n{self.log()}")
            time.sleep(0.05)


class _Imap:
    """An `imaplib.IMAP4` that logs out on exit, whatever happened."""

    def __init__(self, client: imaplib.IMAP4) -> None:
        self.client = client

    def __enter__(self) -> imaplib.IMAP4:
        return self.client

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.client.logout()
        except (imaplib.IMAP4.error, OSError):
            self.client.shutdown()


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(typ: str, data: Sequence[object], what: str) -> None:
    if typ != "OK":
        raise RuntimeError(f"{what} failed: {typ} {data!r}")


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )

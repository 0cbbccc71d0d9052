"""Helpers for the authentication tests: auth files, certificates, and a raw SCRAM client that
can send every malformed message a real driver never would."""
import base64
import hashlib
import hmac
import os
import socket
import ssl
import stat
import struct
import subprocess
import tempfile

import pgwp
from pgwp import BINARY, SSL_REQUEST, RawClient, cstr

PLUS = "SCRAM-SHA-256-PLUS"
PLAIN = "SCRAM-SHA-256"


def verifier(password):
    """A SCRAM-SHA-256 verifier from `pgwire-proxy --hash-password`."""
    r = subprocess.run([BINARY, "--hash-password"], input=password + "\n", capture_output=True,
                       text=True, timeout=pgwp.BOUND)
    assert r.returncode == 0, r.stderr
    v = r.stdout.strip()
    assert v.startswith("SCRAM-SHA-256$4096:"), v
    return v


def write_users(path, users, mode=0o600):
    """users: {name: secret-or-password}; names and secrets quoted as userlist.txt wants."""
    def q(s):
        return '"' + s.replace('"', '""') + '"'
    with open(path, "w") as f:
        f.write("; users for the tests\n")
        for name, secret in users.items():
            f.write(f"{q(name)} {q(secret)}\n")
    os.chmod(path, mode)
    return str(path)


def scram_flags(tmp_path, users, *more, name="users.txt"):
    path = write_users(tmp_path / name, users)
    return ("--auth-type", "scram-sha-256", "--auth-file", path,
            "--auth-secret-file", str(tmp_path / "auth.secret")) + tuple(more)


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"openssl {args} failed: {r.stderr}"


class Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, client certificates by CN."""

    def __init__(self, d):
        self.dir = d
        self._ca("ca")
        self.server = self.leaf("server", "localhost",
                                "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                "extendedKeyUsage=serverAuth\n")

    def path(self, name, ext):
        return os.path.join(self.dir, f"{name}.{ext}")

    def _ca(self, name):
        openssl("req", "-x509", "-new", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.crt", "-days", "2", "-subj", f"/CN=pgwire-proxy auth test {name}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=self.dir)
        os.chmod(self.path(name, "key"), 0o600)

    def leaf(self, name, cn, ext="extendedKeyUsage=clientAuth\n", keytype="ec", subj=None):
        key = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
               if keytype == "ec" else ["-newkey", keytype])
        openssl("req", "-new", *key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", subj or f"/CN={cn}", cwd=self.dir)
        os.chmod(self.path(name, "key"), 0o600)
        with open(self.path(name, "ext"), "w") as f:
            f.write(ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile",
                f"{name}.ext", cwd=self.dir)
        return name

    def tls_flags(self, server="server", ca=True):
        f = ("--tls-cert", self.path(server, "crt"), "--tls-key", self.path(server, "key"))
        return f + (("--tls-ca", self.path("ca", "crt")) if ca else ())

    def client_params(self, name):
        return dict(sslcert=self.path(name, "crt"), sslkey=self.path(name, "key"))


def shared_dir(prefix):
    """A directory another OS user can enter (for a Unix socket used by `postgres`)."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(d, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return d


# ---------------------------------------------------------------------------------------------
# A raw SCRAM client


def b64(b):
    return base64.b64encode(b).decode()


def client_proof(password, salt, iterations, auth_message):
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    sig = hmac.new(stored, auth_message.encode(), "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    server_sig = hmac.new(server_key, auth_message.encode(), "sha256").digest()
    return bytes(a ^ b for a, b in zip(client_key, sig)), server_sig


def parse_attrs(msg):
    return dict(part.split("=", 1) for part in msg.split(","))


class Sasl:
    """A connection that sent its StartupMessage and got AuthenticationSASL (or an error)."""

    def __init__(self, host, port, user, database="postgres", tls=False, cert=None,
                 unix=None):
        self.c = RawClient.unix(unix) if unix else RawClient(host, port)
        self.tls = None
        if tls:
            self.c.send_request_code(SSL_REQUEST)
            assert self.c.read_byte() == b"S"
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if cert:
                ctx.load_cert_chain(*cert)
            self.c.sock = ctx.wrap_socket(self.c.sock, server_hostname="localhost")
            self.tls = self.c.sock
        self.c.send_startup(user=user, database=database)
        self.first = self.c.read_msg()
        self.mechs = []
        if self.first.type == "R" and struct.unpack("!I", self.first.payload[:4])[0] == 10:
            self.mechs = [m.decode() for m in self.first.payload[4:].split(b"\0") if m]

    def close(self):
        self.c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def cert_hash(self):
        """tls-server-end-point for an ECDSA-SHA256 (or RSA-SHA256) server certificate."""
        return hashlib.sha256(self.tls.getpeercert(binary_form=True)).digest()

    def send_initial(self, mech, data):
        body = cstr(mech) + (struct.pack("!i", -1) if data is None else
                             struct.pack("!i", len(data)) + data)
        self.c.send("p", body)
        return self.c.read_msg()

    def send_response(self, data):
        self.c.send("p", data)
        return self.c.read_msg()

    @staticmethod
    def auth_data(msg):
        """(code, data) of an Authentication message."""
        assert msg.type == "R", msg
        return struct.unpack("!I", msg.payload[:4])[0], msg.payload[4:]

    def first_round(self, mech=PLAIN, gs2="n,,", nonce="clientnonce0123456789abc"):
        """Sends client-first; returns (server-first text or None, the message)."""
        self.bare = f"n=,r={nonce}"
        self.gs2 = gs2
        m = self.send_initial(mech, (gs2 + self.bare).encode())
        if m.type != "R":
            return None, m
        code, data = self.auth_data(m)
        assert code == 11, m
        self.server_first = data.decode()
        return self.server_first, m

    def final_round(self, password, cbind=None, nonce=None, proof=None, extra="", tail=""):
        """Sends client-final with a proof for `password` (extra: attributes before the proof,
        tail: bytes after it); returns the answer."""
        attrs = parse_attrs(self.server_first)
        c = cbind if cbind is not None else b64(self.gs2.encode())
        without = f"c={c},r={nonce or attrs['r']}{extra}"
        auth = f"{self.bare},{self.server_first},{without}"
        p, self.server_sig = client_proof(password, base64.b64decode(attrs["s"]),
                                          int(attrs["i"]), auth)
        return self.send_response(f"{without},p={proof or b64(p)}{tail}".encode())

    def login(self, password, mech=None, gs2=None):
        """A whole exchange, -PLUS when offered. Returns the messages after client-final."""
        mech = mech or (PLUS if PLUS in self.mechs else PLAIN)
        if gs2 is None:
            gs2 = "p=tls-server-end-point,," if mech == PLUS else "n,,"
        sf, m = self.first_round(mech, gs2)
        if sf is None:
            return [m]
        cb = b64(gs2.encode() + self.cert_hash()) if mech == PLUS else None
        m = self.final_round(password, cbind=cb)
        if m.type != "R":
            return [m]
        return [m] + self.c.read_until_rfq()


def connect_error(exc):
    return str(exc).strip()


def sock_closed(sock, timeout=2):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout, ssl.SSLError):
        return True

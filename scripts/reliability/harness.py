"""Runs the real Paperhook system for the reliability suites (faults.py,
bad_input.py): a private PostgreSQL cluster and, when asked, a private
SeaweedFS on free ports (so the suites may stop and restart them without
touching shared services), the real binaries, and webhook receivers whose
behaviour can be switched while they run. Standard library only, except
`standardwebhooks` (the third-party verifier) for signatures.
"""

import base64
import http.client
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parents[2]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Ports handed out from below the kernel's ephemeral range (32768 up):
# a port picked with bind(0) and closed could be handed to another
# process's bind(0) before ours binds it (a restarted worker's metrics
# port, say); these are given out once each by this process, from a
# stretch of its own (by pid), and checked free.
_NEXT_PORT = [10000 + (os.getpid() % 200) * 50]


def free_port(also_plus=None):
    """A free TCP port on 127.0.0.1 (and port+also_plus free too, for gRPC)."""
    while True:
        port = _NEXT_PORT[0]
        _NEXT_PORT[0] = port + 1 if port < 22000 else 10000
        try:
            for p in (port,) if also_plus is None else (port, port + also_plus):
                s = socket.socket()
                try:
                    s.bind(("127.0.0.1", p))
                finally:
                    s.close()
            return port
        except OSError:
            continue


def wait_until(what, check, timeout, interval=0.2):
    """Polls check() until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- PostgreSQL ------------------------------------------------------------


def pg_bindir():
    versions = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    if not versions:
        raise SystemExit("PostgreSQL server binaries are missing (apt-get install postgresql)")
    return versions[-1]


class Postgres:
    """A private trust-auth cluster on a free port, run as user postgres
    when we are root (PostgreSQL refuses to run as root)."""

    def __init__(self, workdir):
        self.bin = pg_bindir()
        self.data = pathlib.Path(workdir) / "pg"
        self.sock = pathlib.Path(workdir) / "pgsock"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/paperhook"
        self.restarts = 0
        root = os.geteuid() == 0
        self.run_as = ["runuser", "-u", "postgres", "--"] if root else []
        self.data.mkdir(parents=True)
        self.sock.mkdir()
        if root:
            shutil.chown(workdir, "postgres")
            shutil.chown(self.data, "postgres")
            shutil.chown(self.sock, "postgres")
        subprocess.run(
            self.run_as + [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                           "--auth=trust", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL)
        self.start()
        self.psql("postgres", "CREATE DATABASE paperhook")

    def pg_ctl(self, *args):
        subprocess.run(self.run_as + [str(self.bin / "pg_ctl"), "-D", str(self.data), *args],
                       check=True, stdout=subprocess.DEVNULL)

    def start(self):
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                "-c max_connections=200 -c fsync=off")
        self.pg_ctl("-l", str(self.data / "server.log"), "-o", opts, "-w", "start")

    def stop(self, mode="fast"):
        """mode "immediate" is a crash: no checkpoint, connections cut."""
        self.pg_ctl("-m", mode, "-w", "stop")

    def psql(self, db, sql):
        out = subprocess.run(
            ["psql", f"postgres://postgres@127.0.0.1:{self.port}/{db}", "-AtqX", "-v",
             "ON_ERROR_STOP=1", "-c", sql],
            check=True, capture_output=True, text=True)
        return out.stdout

    def query(self, sql):
        """Rows of a query as lists of strings (fields separated by |)."""
        return [line.split("|") for line in self.psql("paperhook", sql).splitlines() if line]

    def close(self):
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass


# --- SeaweedFS ---------------------------------------------------------------

S3_KEY = "paperhook"
S3_SECRET = "paperhook-faults-secret"


class Seaweed:
    """A private `weed mini` (S3 API) on free ports, stoppable and restartable
    with its data kept."""

    def __init__(self, workdir, bucket):
        self.dir = pathlib.Path(workdir) / "weed"
        (self.dir / "data").mkdir(parents=True)
        self.bucket = bucket
        self.ports = {name: free_port(also_plus=10000) for name in ("s3", "master", "volume", "filer")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        (self.dir / "s3.json").write_text(json.dumps({"identities": [{
            "name": "paperhook",
            "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.proc = None
        self.stops = 0
        self.start()

    def start(self):
        p = self.ports
        self.log = open(self.dir / "weed.log", "ab")
        self.proc = subprocess.Popen(
            ["weed", "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-s3.port={p['s3']}", f"-master.port={p['master']}", f"-volume.port={p['volume']}",
             f"-filer.port={p['filer']}", f"-s3.config={self.dir / 's3.json'}", "-admin.ui=false",
             "-s3.port.iceberg=0", "-s3.port.lance=0"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        wait_until("SeaweedFS to accept a PUT", lambda: self.request("PUT", self.bucket) in (200, 409)
                   and self.request("PUT", f"{self.bucket}/probe", b"ok") == 200, 90, 0.5)
        # A just-started server may not answer the first DELETE; the probe
        # must not be taken for a file the system left behind.
        wait_until("SeaweedFS to delete the probe",
                   lambda: self.request("DELETE", f"{self.bucket}/probe") in (200, 204), 30, 0.5)

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()
        self.stops += 1

    def request(self, method, path, data=None, query=""):
        """An S3 request signed by curl (SigV4); returns the status, or the
        body for GET. 0 when the server cannot be reached."""
        url = f"{self.endpoint}/{path}" + (f"?{query}" if query else "")
        cmd = ["curl", "-s", "-m", "10", "-X", method, "--aws-sigv4", "aws:amz:us-east-1:s3",
               "--user", f"{S3_KEY}:{S3_SECRET}", "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
               "-w", "\n%{http_code}"]
        if data is not None:
            cmd += ["--data-binary", "@-"]
        out = subprocess.run(cmd + [url], input=data, capture_output=True)
        body, _, code = out.stdout.rpartition(b"\n")
        code = int(code or 0)
        return (code, body) if method == "GET" else code

    def list(self, prefix=""):
        """Every object key under prefix (ListObjectsV2, paginated)."""
        keys, token = [], None
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            code, body = self.request("GET", self.bucket, query=urllib.parse.urlencode(q))
            if code != 200:
                raise RuntimeError(f"listing the bucket answered {code}: {body[:200]!r}")
            tree = ET.fromstring(body)
            keys += [c.findtext(f"{ns}Key") for c in tree.iter(f"{ns}Contents")]
            token = tree.findtext(f"{ns}NextContinuationToken")
            if not token:
                return keys

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.stop()


# --- Webhook receiver ---------------------------------------------------------


class QuietServer(ThreadingHTTPServer):
    """Connections the receiver drops on purpose are not errors."""

    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass


class Receiver:
    """A webhook receiver on a fixed port whose answer can be switched:
    "ok" (200), "500", "timeout" (answers after the worker gave up),
    "close" (drops the connection without answering) or "down" (the port is
    closed). Records every request it reads."""

    def __init__(self, secrets, timeout_secs):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.secrets = secrets  # template id -> whsec_ secret, filled by the caller
        self.timeout_secs = timeout_secs
        self.mode = "ok"
        self.requests = []  # dicts: id, body, answered, verified
        self.lock = threading.Lock()
        self.server = None
        self.up()

    def up(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                mode = receiver.mode
                receiver.record(self.headers, body, mode)
                # "down": a connection accepted just before the port closed
                # gets no answer either, as from a server that went away.
                if mode in ("close", "down"):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "timeout":
                    time.sleep(receiver.timeout_secs + 1)
                code = 500 if mode == "500" else 200
                self.send_response(code)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = QuietServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def set(self, mode):
        # The mode changes before the port closes: a request still being read
        # when it does must not be answered (and recorded) as a 200.
        if mode == "down":
            self.mode = mode
            if self.server:
                self.down()
            return
        if not self.server:
            self.up()
        self.mode = mode

    def record(self, headers, body, mode):
        from standardwebhooks.webhooks import Webhook

        payload = json.loads(body)
        secret = self.secrets.get(payload.get("template_id"))
        try:
            Webhook(secret).verify(body, {k.lower(): v for k, v in headers.items()})
            verified = True
        except Exception:
            verified = False
        with self.lock:
            self.requests.append({"id": headers.get("webhook-id"), "payload": payload,
                                  "answered": mode, "verified": verified})

    def close(self):
        if self.server:
            self.down()


# --- The system --------------------------------------------------------------


class Api:
    """A small JSON client with a timeout on every request."""

    def __init__(self, base, timeout=15):
        self.base = base
        self.timeout = timeout

    def call(self, method, path, key=None, body=None, headers=None, timeout=None):
        """(status, parsed JSON or raw bytes, seconds); status 0 on a client
        error (timeout, connection refused) with the error as the body."""
        data, hdrs = None, dict(headers or {})
        if key:
            hdrs["x-auth"] = key
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("content-type", "application/json")
        elif body is not None:
            data = body
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.base)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout or self.timeout)
        try:
            try:
                conn.request(method, path, body=data, headers=hdrs)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered (e.g. 413) before reading the whole body
            res = conn.getresponse()
            status, raw = res.status, res.read()
        except OSError as e:
            return 0, repr(e), time.monotonic() - started
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return status, parsed, time.monotonic() - started

    def submit(self, key, template_id, name, data, timeout=None):
        body = {"template_id": template_id, "actual_image": base64.b64encode(data).decode(),
                "static_values": {"file": name}}
        return self.call("POST", "/process-job", key, body, timeout=timeout)


def multipart(fields, files):
    """A multipart/form-data body: fields {name: str}, files {name: (filename, bytes)}."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += (f"--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    for name, (filename, data) in files.items():
        out += (f"--{boundary}\r\ncontent-disposition: form-data; name=\"{name}\"; "
                f"filename=\"{filename}\"\r\ncontent-type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def multipart_raw(template_id, data, header_boundary="b0undary", body_boundary=None):
    """(content type, body) of a multipart submission, possibly broken: a
    body written with another boundary than the header's, or no file."""
    b = body_boundary or header_boundary
    out = (f"--{b}\r\ncontent-disposition: form-data; name=\"template_id\"\r\n\r\n"
           f"{template_id}\r\n").encode()
    if data is not None:
        out += (f"--{b}\r\ncontent-disposition: form-data; name=\"actual_image\"; "
                f"filename=\"a.pdf\"\r\ncontent-type: application/pdf\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{b}--\r\n".encode()
    return f"multipart/form-data; boundary={header_boundary}", out


class System:
    """The API, N workers and the janitor on one database and storage."""

    def __init__(self, bindir, workdir, env):
        self.bindir = pathlib.Path(bindir)
        self.workdir = pathlib.Path(workdir)
        (self.workdir / "logs").mkdir(exist_ok=True)
        port = free_port()
        self.env = dict(os.environ, **{
            "PAPERHOOK_API_ADDR": f"127.0.0.1:{port}",
            "PAPERHOOK_PUBLIC_URL": f"http://127.0.0.1:{port}",
            "PAPERHOOK_ENCRYPTION_KEYS": "0:" + base64.b64encode(os.urandom(32)).decode(),
            "PAPERHOOK_WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
            "OMP_THREAD_LIMIT": "1",
            "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        }, **env)
        self.api = Api(f"http://127.0.0.1:{port}")
        self.procs = {}  # name -> Popen
        self.lock = threading.Lock()  # held while killing and restarting workers
        self.exited = []  # (name, exit status) of processes found dead before a kill
        self.worker_names = []
        self.metrics_urls = {}  # worker name -> its /metrics URL
        self.kills = 0
        self.worker_starts = 0
        self.peak_rss_kib = {}  # process name (api, worker-N) -> VmHWM seen

    def run_admin(self, *args):
        out = subprocess.run([str(self.bindir / "paperhook-api"), *args], env=self.env,
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout) if out.stdout.strip().startswith("{") else out.stdout

    def spawn(self, name, binary, *args, env=None):
        logf = open(self.workdir / "logs" / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([str(self.bindir / binary), *args],
                                            env=dict(self.env, **(env or {})),
                                            stdout=logf, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)
        logf.close()

    def start(self, workers):
        self.run_admin("migrate")
        self.spawn("api", "paperhook-api", "serve")
        wait_until("the API to answer /healthz",
                   lambda: self.api.call("GET", "/healthz", timeout=2)[0] == 200, 60)
        for i in range(workers):
            self.worker_names.append(f"worker-{i}")
            self.start_worker(f"worker-{i}")
        self.spawn("janitor", "paperhook-janitor")

    def start_worker(self, name):
        # Each worker's /metrics on its own port (a restarted one's anew).
        port = free_port()
        self.metrics_urls[name] = f"http://127.0.0.1:{port}/metrics"
        self.spawn(name, "paperhook-worker", env={"PAPERHOOK_METRICS_ADDR": f"127.0.0.1:{port}"})
        self.worker_starts += 1

    def metric(self, name, series):
        """The value of one series (`name{labels}` as exposed) of process `name`, or 0."""
        with urllib.request.urlopen(self.metrics_urls[name], timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(series + " "):
                    return float(line.split()[-1])
        return 0.0

    def sample_rss(self):
        for name in ["api", *self.worker_names]:
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                try:
                    status = pathlib.Path(f"/proc/{proc.pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        kib = int(line.split()[1])
                        self.peak_rss_kib[name] = max(self.peak_rss_kib.get(name, 0), kib)

    def kill_worker(self, name):
        """kill -9, then wait for the process to be gone."""
        proc = self.procs[name]
        if proc.poll() is not None:  # it died on its own before we came
            self.exited.append((name, proc.returncode))
        else:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.kills += 1

    def check_alive(self):
        """Processes that exited on their own (they must not), with their status."""
        return self.exited + [(n, p.returncode) for n, p in self.procs.items() if p.poll() is not None]

    def account(self, name, credits, template):
        created = self.run_admin("admin", "create-account", "--name", name, "--credits", str(credits))
        key = created["api_key"]
        status, body, _ = self.api.call("POST", "/v1/templates", key, template)
        assert status == 201 or status == 200, (status, body)
        tid = body["id"]
        status, secret, _ = self.api.call("GET", f"/v1/templates/{tid}/webhook-secret", key)
        assert status == 200, (status, secret)
        return {"name": name, "id": created["account_id"], "key": key, "template": tid,
                "secret": secret["secret"]}

    def tail_logs(self, lines=30):
        for path in sorted((self.workdir / "logs").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()
            print(f"--- {path.name} (last {lines} lines) ---")
            print("\n".join(text[-lines:]))

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


def template(url, name="Faults invoices"):
    spec = json.loads((ROOT / "examples" / "template.json").read_text())
    spec["name"] = name
    spec["webhook"] = {"url": url, "headers": {"x-suite": "faults"}}
    return spec


def invoice_pdf(pages=1):
    """The example invoice repeated on `pages` pages, with a text layer."""
    one = (ROOT / "examples" / "invoice.pdf").read_bytes()
    if pages == 1:
        return one
    # The example's content stream (object 5, with its dictionary) on every page.
    start = one.index(b"5 0 obj\n") + len(b"5 0 obj\n")
    stream = one[start:one.index(b"\nendobj", start)]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(pages))
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"]
    for i in range(pages):
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
                    b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i))
        objs.append(stream)
    return pdf_from_objects(objs)


def pdf_from_objects(objs, root=1):
    """A PDF file of the given object bodies (numbered from 1), with its xref."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, root, xref)
    return bytes(out)


def blank_png(width=400, height=300):
    """A white grayscale PNG (no text: required fields are missing)."""
    import struct
    import zlib

    raw = b"".join(b"\x00" + b"\xff" * width for _ in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def zip_of(entries):
    """A ZIP (deflated) of {name: bytes}."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def rng(seed):
    return random.Random(seed)


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)
